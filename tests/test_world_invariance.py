"""World-size invariance: with the same global batch, a run on 2 processes (gloo) computes what a run on 1
computes, epoch by epoch (the supervised engine, which fine-tuning runs too, the linear probe, MoCo-v3, DINO
and the segmentation), and validation and the evaluation engine count every image of odd-sized sets once,
to the same figures.

Drop path is 0, Mixup/CutMix are off and so is the FPN head's dropout: they draw per rank from the global
RNGs (Mixup also pairs images within a rank's batch), so they cannot match across process counts. What
stays random is seeded per sample (the crops, RandAugment, random erasing, the SSL views' colour jitter,
blur and solarisation, the segmentation's resize, crop, flip and photometric distortion: by run seed,
epoch, dataset index and copy) or per global batch. What makes the SSL and segmentation runs agree is
reduced across the ranks: MoCo-v3's keys (gathered), DINO's centre (summed), the BatchNorms of MoCo-v3's
MLPs and of the FPN head (`harness.core.syncbn`), and DINO's teacher starting from rank 0's student."""

from pathlib import Path

import pytest

from harness.core.data import GlobalOrder
from harness.distributed import World
from harness.recipe import load_recipe
from harness.results import read_metrics, read_result, run_dir
from tests.harness_fixtures import TINY, TINY_KWARGS, TINY_OVERRIDES, write_tiny
from tests.test_engines import _downstream
from tests.test_harness_train import _run_to_end
from tests.test_segmentation import UPSTREAM
from tests.test_segmentation import _downstream as _segmentation
from tests.test_ssl_engines import _recipes

# the SAR row alone (L_se trained), 5 classes x 5 val images: an odd val split of 25
SAR_ONLY = TINY[: TINY.index("  - id: base")] + TINY[TINY.index("  - id: sar") :].replace(
    "    baseline: base\n", ""
)
OVERRIDES = [
    *TINY_OVERRIDES,
    "epochs=2",
    "protocol.warmup_epochs=0",
    "protocol.lr=0.05",  # x 16 / 512: a rate at which the tiny model learns in 2 epochs
    "protocol.drop_path=0",
    "protocol.mixup=0",
    "protocol.cutmix=0",
    "data.synthetic.num_classes=5",
    "data.synthetic.val_per_class=5",
]


def _train(folder: Path, *launch: str) -> tuple[list[dict], int]:
    folder.mkdir()
    recipe = folder / "tiny.yaml"
    recipe.write_text(SAR_ONLY.format(runs=folder / "runs", kwargs=TINY_KWARGS))
    _run_to_end("run", str(recipe), *OVERRIDES, *launch)
    (run,) = load_recipe(recipe, OVERRIDES)[1]
    run_folder = run_dir(run.config, run.uid)
    return read_metrics(run_folder), read_result(run_folder)[0].provenance["world_size"]


@pytest.mark.slow
def test_two_processes_train_and_validate_as_one(tmp_path):
    one, size_one = _train(tmp_path / "one")
    two, size_two = _train(
        tmp_path / "two",
        "launcher=local",
        f"launcher.folder={tmp_path / 'submitit'}",
        "resources.tasks_per_node=2",
    )
    assert (size_one, size_two) == (1, 2)
    assert [r["epoch"] for r in two] == [r["epoch"] for r in one] == [1, 2]
    for got, expected in zip(two, one, strict=True):
        assert got["lr"] == expected["lr"]
        for key in ("train_loss", "train_ce", "train_se"):
            assert got[key] == pytest.approx(expected[key], rel=1e-4), (got["epoch"], key)
        assert (got["val_top1"], got["val_top5"]) == (expected["val_top1"], expected["val_top5"])
        assert round(got["val_top1"] * 25 / 100, 6).is_integer()  # a count of the 25 images, each once


EVALUATED = "[imagenet_a_top1, mce, jaccard]"


def _evaluate(recipe: Path, *launch: str) -> dict:
    """The evaluation's metrics, its every corruption split's error among them."""
    _run_to_end("run", str(recipe), *launch)
    (run,) = load_recipe(recipe)[1]
    result, _ = read_result(run.folder)
    assert result.provenance["world_size"] == (2 if launch else 1)
    return {**result.metrics, **result.extra.imagenet_c_errors}


@pytest.mark.slow
def test_two_processes_evaluate_odd_sized_sets_as_one(tmp_path):
    """The upstream's 5 classes x 3 val images (the stand-ins are built from its synthetic config):
    ImageNet-C's splits hold 15 images, ImageNet-A's 9 (every other class), VOC's 15."""
    upstream = write_tiny(tmp_path, tmp_path / "runs")
    text = upstream.read_text().replace("epochs: 3", "epochs: 1").replace("num_classes: 4", "num_classes: 5")
    text = text.replace("val_per_class: 6", "val_per_class: 3")
    upstream.write_text(text + "protocol: {batch_size: 16, warmup_epochs: 1}\n")
    _run_to_end("run", str(upstream), "--rows", "base")
    metrics = {}
    for processes in (1, 2):
        folder = tmp_path / str(processes)
        folder.mkdir()
        recipe = _downstream(
            folder, upstream, engine="evaluate", metrics=EVALUATED, eval_metrics=EVALUATED, classes=5
        )
        recipe.write_text(recipe.read_text().replace("seed: 9", "seed: 1"))  # the upstream's classes
        launch = ["launcher=local", f"launcher.folder={folder / 'submitit'}", "resources.tasks_per_node=2"]
        metrics[processes] = _evaluate(recipe, *(launch if processes == 2 else []))
    assert metrics[2] == metrics[1]
    assert round(metrics[1]["imagenet_a_top1"] * 9 / 100, 6).is_integer()  # counts of 9 and 15 images
    assert all(round(error * 15, 6).is_integer() for error in metrics[1]["fog"])


@pytest.mark.slow
def test_two_processes_probe_as_one(tmp_path):
    """DINO's linear probe on a frozen tiny backbone: 24 train images, 3 global batches of 8 (with a partial
    last batch, which the probes train on, a rank's share would be uneven and its mean weighted unlike
    the global batch's)."""
    upstream, probes = _recipes(tmp_path)
    _run_to_end("run", str(upstream), "--rows", "dino")
    records = {}
    for processes in (1, 2):
        runs = tmp_path / f"probe{processes}"
        local = ["launcher=local", f"launcher.folder={runs / 'submitit'}", "resources.tasks_per_node=2"]
        launch = local if processes == 2 else []
        every_epoch = "local.eval_every=1"  # both epochs validated (a local run validates its last only)
        _run_to_end("run", str(probes), "--rows", "probe", f"runs_root={runs}", every_epoch, *launch)
        _, runs_of = load_recipe(probes, [f"runs_root={runs}", every_epoch])
        (run,) = (r for r in runs_of if r.rows == ["probe"])
        folder = run_dir(run.config, run.uid)
        assert read_result(folder)[0].provenance["world_size"] == processes
        records[processes] = read_metrics(folder)
    assert [r["epoch"] for r in records[2]] == [r["epoch"] for r in records[1]] == [1, 2]
    for got, expected in zip(records[2], records[1], strict=True):
        assert got["lr"] == expected["lr"]
        assert got["train_loss"] == pytest.approx(expected["train_loss"], rel=1e-5)
        assert (got["val_top1"], got["val_top5"]) == (expected["val_top1"], expected["val_top5"])


@pytest.mark.parametrize("repeats", [1, 3])
@pytest.mark.parametrize("batch", [6, None])
def test_ranks_share_one_global_order(repeats, batch):
    """Rank r's j-th sample is the global order's r + j * size: every global batch holds the same samples
    on 1, 2 or 3 processes, no sample twice (bar the probes' padding), each with the same key."""

    def shares(size: int) -> list[list]:
        samplers = [GlobalOrder(13, 7, 99, World(rank=r, size=size), batch, repeats) for r in range(size)]
        for sampler in samplers:
            sampler.set_epoch(2)
        assert len({len(s) for s in samplers}) == 1  # every rank takes as many steps
        return [list(s) for s in samplers]

    (alone,) = shares(1)
    keys = [key for _, key in alone]
    assert len(set(keys)) == len(keys) and all(key[:3] == (7, 2, index) for index, key in alone)
    for size in (2, 3):
        ranks = shares(size)
        interleaved = [ranks[p % size][p // size] for p in range(size * len(ranks[0]))]
        # the probes' order (batch None) is padded to a multiple of the world size with its first samples
        assert interleaved[: len(alone)] == alone and len(interleaved) - len(alone) < size


def _processes(folder: Path, processes: int) -> list[str]:
    """The launcher overrides of a run on `processes` processes (1: inline, in the test's process)."""
    if processes == 1:
        return []
    return [
        "launcher=local",
        f"launcher.folder={folder / 'submitit'}",
        f"resources.tasks_per_node={processes}",
    ]


def _same_records(got: list[dict], expected: list[dict], rel: float) -> None:
    """Every figure of every record within `rel` of the other's, but the timings."""
    assert len(got) == len(expected)
    timings = {"seconds", "images_per_s", "train_seconds"}
    for a, b in zip(got, expected, strict=True):
        assert a.keys() == b.keys()
        for key in a.keys() - timings:
            assert a[key] == pytest.approx(b[key], rel=rel, abs=1e-9), (
                a.get("epoch", a.get("iteration")),
                key,
            )


@pytest.mark.slow
@pytest.mark.parametrize("row", ["moco", "dino"])
def test_two_processes_pretrain_as_one(tmp_path, row):
    """MoCo-v3 (keys gathered, MLP BatchNorms synchronised) and DINO (centre summed, teacher from rank 0)."""
    records = {}
    for processes in (1, 2):
        folder = tmp_path / str(processes)
        folder.mkdir()
        up, _ = _recipes(folder)
        _run_to_end("run", str(up), "--rows", row, "protocol.drop_path=0", *_processes(folder, processes))
        (run,) = (r for r in load_recipe(up, ["protocol.drop_path=0"])[1] if r.rows == [row])
        assert read_result(run.folder)[0].provenance["world_size"] == processes
        records[processes] = read_metrics(run.folder)
    assert [r["epoch"] for r in records[1]] == [1, 2]
    _same_records(records[2], records[1], rel=1e-5)


@pytest.mark.slow
def test_two_processes_segment_as_one(tmp_path):
    """The Semantic FPN on a tiny PVT: 4 iterations of 4 crops, the head's BatchNorms synchronised, mIoU
    counted on the 6 val images (3 per rank)."""
    upstream = tmp_path / "up.yaml"
    upstream.write_text(UPSTREAM.replace("{runs}", str(tmp_path / "runs")))
    _run_to_end("run", str(upstream), "--rows", "pvt")
    off = ["protocol.drop_path=0", "protocol.segmentation.dropout=0"]
    records = {}
    for processes in (1, 2):
        folder = tmp_path / str(processes)
        folder.mkdir()
        recipe = _segmentation(folder, upstream)
        _run_to_end("run", str(recipe), "--rows", "seg", *off, *_processes(folder, processes))
        (run,) = (r for r in load_recipe(recipe, off)[1] if r.rows == ["seg"])
        assert read_result(run.folder)[0].provenance["world_size"] == processes
        records[processes] = read_metrics(run.folder)
    assert [r["iteration"] for r in records[1]] == [2, 4]
    _same_records(records[2], records[1], rel=1e-5)
