"""`scale=local`: the same run on the embedded synthetic dataset, with the model family's small member,
fewer epochs (warm-ups shrink with them), CPU-sized batches at the protocol's base learning rate, and
small crops, heads and iteration counts where its protocol has them."""

import zlib
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from harness.config import RecipeError, runs_root
from harness.data import DATASETS
from harness.data.synthetic import MAX_CLASSES
from harness.engines.spec import Progress, spec_of
from sar.models import LOCAL_KWARGS

# datasets whose local stand-in keeps their class count: Tab. 4's transfer targets, Tab. 3's small sets
TRANSFER_TARGETS = (
    "cifar10",
    "cifar100",
    "flowers102",
    "pets",
    "stanford_cars",
    "domainnet_clipart",
    "domainnet_painting",
    "domainnet_sketch",
)
ITERATION_COUNTS = ("iterations", "eval_every", "checkpoint_every")  # what local scale shrinks
FPN_WIDTHS = ("neck_channels", "head_channels")


def anchor_folders(run: dict[str, Any]) -> None:
    """The run store and submitit's folder as absolute paths, fixed when the run is resolved: the same
    runs whatever folder `run`, `status` or a requeued job starts from."""
    run["runs_root"] = runs_root(run["runs_root"])
    folder = run["launcher"]["folder"] or Path(run["runs_root"]) / "_submitit"
    run["launcher"]["folder"] = str(Path(folder).expanduser().resolve())


def _synthetic_seed(dataset: str) -> int:
    """A fixed synthetic dataset per paper dataset: different datasets stand in as different seeds."""
    return zlib.crc32(dataset.encode())


def to_local(run: dict[str, Any], local: DictConfig) -> None:
    """The same run on the synthetic dataset, with the model family's small member and fewer epochs."""
    if run["model"] not in LOCAL_KWARGS:
        raise RecipeError(
            f"model {run['model']!r} has no local-scale member; local scale knows {', '.join(LOCAL_KWARGS)}"
        )
    dataset = run["data"]["dataset"]
    shrink = local.synthetic.image_size / run["data"]["input_size"]
    synthetic = {**OmegaConf.to_container(local.synthetic), "seed": _synthetic_seed(dataset)}
    if dataset in TRANSFER_TARGETS:  # the target's own class count, on a few images per class
        classes = min(DATASETS[dataset].num_classes, MAX_CLASSES)
        synthetic.update(
            num_classes=classes,
            train_per_class=max(2, local.target_train_images // classes),
            val_per_class=max(1, local.target_val_images // classes),
        )
    run["data"].update(
        stands_for=dataset,
        dataset="synthetic",
        root=None,
        input_size=local.synthetic.image_size,
        num_workers=local.num_workers,
        synthetic=synthetic,
    )
    run["eval"].update(input_size=None, roots={})  # the stand-ins are rendered at the model's size
    spec = spec_of(run["engine"])
    if spec.stand_ins:  # only engines that read it: the others' runs keep their uids
        run["eval"]["standin_per_class"] = dict(local.standin_per_class or {})
    run["model_kwargs"] = {**LOCAL_KWARGS[run["model"]], **run["model_kwargs"]}
    protocol, ratio = run["protocol"], 1.0
    # warm-ups shrink with the epochs: 20 of 8 epochs would be all warm-up
    if spec.progress is Progress.epoch:
        epochs = max(local.min_epochs, round(run["epochs"] * local.epochs_factor))
        ratio = epochs / run["epochs"]
        _update(protocol, {key: round(protocol[key] * ratio) for key in ("warmup_epochs", "cooldown_epochs")})
        run["loss"]["warmup_epochs"] = round(run["loss"]["warmup_epochs"] * ratio)
        run["epochs"] = epochs
        if spec.validates:
            run["train"]["eval_every"] = local.eval_every or epochs
    # the protocol's base learning rate, not scaled down to the local batch (5e-4 x 64/512 barely moves)
    _update(
        protocol, {"batch_size": local.batch_size, "repeated_aug": local.repeated_aug, "lr_batch_ref": None}
    )
    if not local.strong_augment:
        _update(protocol, {"auto_augment": None, "mixup": 0.0, "cutmix": 0.0})
    run["resources"].update(nodes=1, gpus_per_node=0, cpus_per_task=local.cpus, mem_gb=local.mem_gb)
    _ssl_to_local(protocol, local, ratio, shrink)
    _segmentation_to_local(protocol, local)


def _update(protocol: dict[str, Any], values: dict[str, Any]) -> None:
    """Set the keys the run's protocol has (its engine reads them); the others are not the run's."""
    protocol.update({key: value for key, value in values.items() if key in protocol})


def _segmentation_to_local(protocol: dict[str, Any], local: DictConfig) -> None:
    """Iterations (and their intervals) times `local.iterations_factor`; the crop becomes the synthetic
    image and the resize scales shrink with it, so the scale jitter keeps its meaning; the neck and head
    narrow with the local backbone."""
    seg = protocol.get("segmentation")
    if seg is None:
        return
    shrink = local.synthetic.image_size / seg["crop_size"]
    seg.update({key: max(1, round(seg[key] * local.iterations_factor)) for key in ITERATION_COUNTS})
    seg.update({key: max(1, round(seg[key] * local.fpn_width_factor)) for key in FPN_WIDTHS})
    seg.update(
        crop_size=local.synthetic.image_size,
        img_scale=[max(1, round(side * shrink)) for side in seg["img_scale"]],
    )


def _ssl_to_local(protocol: dict[str, Any], local: DictConfig, ratio: float, shrink: float) -> None:
    """Self-supervised pre-training sized for a CPU: small crops and heads from `local`, the teacher
    temperature's warm-up shrunk with the epochs, the blur radii with the image (`local.scale_blur`)."""
    for method in ("dino", "mocov3"):
        if protocol.get(method) is not None and local.scale_blur:
            protocol[method]["blur_radius"] = [r * shrink for r in protocol[method]["blur_radius"]]
    if protocol.get("dino") is not None:
        dino = protocol["dino"]
        dino.update(
            local_crop_size=local.local_crop_size,
            local_crops_number=local.local_crops_number,
            out_dim=local.head_out_dim,
            hidden_dim=local.head_hidden_dim,
            warmup_teacher_temp_epochs=round(dino["warmup_teacher_temp_epochs"] * ratio),
        )
    if protocol.get("mocov3") is not None:
        protocol["mocov3"]["mlp_dim"] = local.head_hidden_dim
