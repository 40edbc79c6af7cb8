"""timm's own ViT families as recipe rows (issue 24): each trains through the supervised engine with SAR
attached, fine-tunes through the finetune engine, reports without paper numbers; a model that is not of
those families or that `sar.attach` refuses is refused at --dry-run, naming the row, key and value; the
standard last block trains as the plain timm model does; `recipes/beyond/` validates at both scales."""

import copy
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F

from harness.cli import main
from harness.config import RECIPES_DIR
from harness.core import anyvit
from harness.recipe import load_recipe
from harness.results import read_metrics, run_dir, run_status
from sar.models import LOCAL_KWARGS, local_kwargs

BEYOND = RECIPES_DIR / "beyond" / "deit3_registers.yaml"
KWARGS = "{img_size: 32, patch_size: 8, embed_dim: 48, depth: 2, num_heads: 3}"
FAMILIES = {  # row id: one timm model of each family sar.attach takes
    "vit": "vit_tiny_patch16_224",
    "deit-distilled": "deit_tiny_distilled_patch16_224",
    "deit3": "deit3_small_patch16_224",
    "vit-reg4": "vit_small_patch14_reg4_dinov2",
    "eva02": "eva02_tiny_patch14_224",
    "beit": "beit_base_patch16_224",
}
HEADER = """
defaults:
  - recipe_schema
  - protocol: deit
  - _self_
name: {name}
title: "Families: a test table"
reproduces: "nothing: a test recipe"
dataset: synthetic
epochs: 1
seeds: [0]
data:
  input_size: 32
  num_workers: 0
  synthetic: {{num_classes: 4, image_size: 32, train_per_class: 16, val_per_class: 4, seed: 1}}
protocol: {{batch_size: 16, warmup_epochs: 0}}
train: {{progress: false, tensorboard: false}}
resources: {{gpus_per_node: 0}}
launcher: {{name: inline}}
runs_root: {runs}
model_kwargs: {kwargs}
loss: {{weight: 0.01}}
rows:
"""


def _recipe(folder: Path, name: str, rows: list[str]) -> Path:
    path = folder / f"{name}.yaml"
    text = HEADER.format(name=name, runs=folder / "runs", kwargs=KWARGS)
    path.write_text(text + "".join(f"  - {row}\n" for row in rows))
    return path


def _family_rows() -> list[str]:
    rows = [
        f"{{id: {row}, label: {row}, model: {model}, last_block: sar, loss: {{sar: true}}}}"
        for row, model in FAMILIES.items()
    ]
    # DRLoc's head reads the patch grid past the four registers
    rows.append(
        "{id: reg4-drloc, label: reg4-drloc, model: vit_small_patch14_reg4_dinov2, last_block: sar, "
        "loss: {sar: true, drloc_weight: 0.1}}"
    )
    return rows


@pytest.mark.slow
def test_each_family_trains_fine_tunes_and_reports(tmp_path):
    families = _recipe(tmp_path, "families", _family_rows())
    assert main(["run", str(families)]) == 0
    _, runs = load_recipe(families)
    for run in runs:
        folder = run_dir(run.config, run.uid)
        record = read_metrics(folder)[-1]
        assert record["train_se"] > 0 and 0 <= record["val_top1"] <= 100, run.rows
        assert run_status(folder).state == "done"
    down = _recipe(
        tmp_path,
        "down",
        [
            f"{{id: ft-{row}, label: ft, engine: finetune, model: {FAMILIES[row]}, from: {{recipe: families, "
            f"row: {row}}}, last_block: sar, loss: {{sar: true}}}}"
            for row in ("deit3", "vit-reg4", "eva02")
        ],
    )
    assert main(["run", str(down)]) == 0
    _, fine_tuned = load_recipe(down)
    assert all(run_status(run_dir(r.config, r.uid)).state == "done" for r in fine_tuned)
    # rows without paper numbers render
    assert main(["report", str(families), "--out", str(tmp_path / "reports")]) == 0
    table = (tmp_path / "reports" / "families.md").read_text()
    assert all(row in table for row in FAMILIES)


def _dry_run_refused(tmp_path, capsys, row: str, expected: list[str], *overrides: str) -> None:
    recipe = _recipe(tmp_path, "bad", [row])
    assert main(["run", str(recipe), "--dry-run", *overrides]) == 2
    err = capsys.readouterr().err
    for fragment in ["bad.yaml", *expected]:
        assert fragment in err, f"{fragment!r} not in: {err}"
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (  # not of the families
            "{id: swin, label: s, model: swin_tiny_patch4_window7_224, last_block: sar}",
            ["row 'swin'", "key 'model'", "swin_tiny_patch4_window7_224", "deit3_*"],
        ),
        (
            "{id: nope, label: n, model: vit_no_such_model, last_block: sar}",
            ["row 'nope'", "key 'model'", "vit_no_such_model", "a registered model"],
        ),
        (  # of the families, but refused by sar.attach: no class token
            "{id: gap, label: g, model: vit_medium_patch16_reg4_gap_256, last_block: sar}",
            ["row 'gap'", "key 'model'", "vit_medium_patch16_reg4_gap_256", "class_token=False"],
        ),
        (
            "{id: cos, label: c, model: deit3_small_patch16_224, last_block: sar, "
            "loss: {sar: true, similarity: cosine}}",
            ["row 'cos'", "key 'loss.similarity'", "cosine", "Eq. 4"],
        ),
        (
            "{id: tag, label: t, model: deit3_small_patch16_224.fb_in1k, last_block: sar}",
            ["row 'tag'", "key 'model'", "without a pretrained tag", "pretrained_file"],
        ),
        (  # nothing downloads
            "{id: pre, label: p, model: deit3_small_patch16_224, last_block: sar, "
            "model_kwargs: {pretrained: true}}",
            ["row 'pre'", "key 'model_kwargs'", "pretrained_file"],
        ),
    ],
)
def test_dry_run_refuses_what_cannot_train(tmp_path, capsys, row, expected):
    _dry_run_refused(tmp_path, capsys, row, expected)


def test_dry_run_refusal_at_local_scale_names_the_row(tmp_path, capsys):
    row = "{id: swin, label: s, model: swin_tiny_patch4_window7_224, last_block: sar}"
    _dry_run_refused(tmp_path, capsys, row, ["row 'swin'", "key 'model'"], "scale=local")


@pytest.mark.parametrize("model", FAMILIES.values())
def test_standard_last_block_trains_as_the_plain_timm_model(model):
    """Same weights, same batch, one AdamW step: same logits before, same weights after."""
    kwargs = {**local_kwargs(model), "drop_path_rate": 0.0}
    torch.manual_seed(0)
    plain = timm.create_model(model, num_classes=5, **kwargs)
    attached = anyvit.build(model, 5, "standard", 0.0, local_kwargs(model), 64)
    attached.load_state_dict(plain.state_dict())
    x, y = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 3])
    steps = []
    for net in (plain, attached):
        optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
        logits = net(x) if net is plain else net.forward_head(net.forward_features_with_similarity(x)[0])
        F.cross_entropy(logits, y).backward()
        optimizer.step()
        steps.append((logits.detach(), {k: v.detach().clone() for k, v in net.state_dict().items()}))
    (logits_plain, after_plain), (logits_ours, after_ours) = steps
    torch.testing.assert_close(logits_ours, logits_plain)
    assert after_ours.keys() == after_plain.keys()
    for key in after_plain:
        torch.testing.assert_close(after_ours[key], after_plain[key], msg=key)


def test_local_members_keep_the_family_features():
    assert local_kwargs("deit3_small_patch16_224") == local_kwargs("vit_small_patch14_reg4_dinov2")
    assert LOCAL_KWARGS["sar_vit_small_patch16_224"] == local_kwargs("deit3_small_patch16_224")
    model = anyvit.build(
        "vit_small_patch14_reg4_dinov2", 10, "sar", 0.0, local_kwargs("vit_small_patch14_reg4_dinov2"), 64
    )
    assert model.num_prefix_tokens == 5 and model.reg_token.shape[1] == 4
    assert model.blocks[0].ls1.gamma.shape == (144,)  # layer scale kept
    tokens, S = model.forward_features_with_similarity(torch.randn(2, 3, 64, 64))
    assert tokens.shape == (2, 5 + 64, 144) and S.shape == (2, 6, 8, 8)
    assert model.patch_grid(tokens).shape == (2, 144, 8, 8)
    with pytest.raises(KeyError, match="deit3_"):
        local_kwargs("swin_tiny_patch4_window7_224")


@pytest.mark.parametrize("scale", ["paper", "local"])
def test_beyond_recipe_validates(scale):
    recipe, runs = load_recipe(BEYOND, [f"scale={scale}"])
    assert {row.id for row in recipe.rows} == {"deit3-s", "deit3-s-sar", "deit3-s-reg4", "deit3-s-reg4-sar"}
    assert all(not row.paper for row in recipe.rows)
    assert len(runs) == 4 * len(recipe.seeds)
    sizes = {run.config.model_kwargs.get("img_size") for run in runs}
    assert sizes == ({64} if scale == "local" else {None})  # paper scale: timm's at the 224-px input
    registers = {run.rows[0]: run.config.model_kwargs.get("reg_tokens") for run in runs}
    assert registers == {"deit3-s": None, "deit3-s-sar": None, "deit3-s-reg4": 4, "deit3-s-reg4-sar": 4}


def test_pretrained_file_loads_local_weights_before_the_last_block(tmp_path):
    """`model_kwargs.pretrained_file`: timm loads the file (its own head dropped for the run's classes),
    then sar.attach replaces the last block; nothing is downloaded."""
    name, kwargs = "deit3_small_patch16_224", local_kwargs("deit3_small_patch16_224")
    source = timm.create_model(name, num_classes=7, **kwargs)
    torch.save(source.state_dict(), tmp_path / "weights.pth")
    model = anyvit.build(
        name, 5, "sar", 0.0, {**kwargs, "pretrained_file": str(tmp_path / "weights.pth")}, 64
    )
    state = model.state_dict()
    for key, value in source.state_dict().items():
        if not key.startswith("head") and key in state:
            torch.testing.assert_close(state[key], value, msg=key)
    assert "blocks.3.norm2.weight" not in state and state["head.weight"].shape == (5, 144)
    with pytest.raises(ValueError, match="is not a file"):
        anyvit.build(name, 5, "sar", 0.0, {**kwargs, "pretrained_file": str(tmp_path / "none.pth")}, 64)


def test_deepcopy_and_pickle_keep_the_model_whole(tmp_path):
    """The EMA's deepcopy (t2t's protocol) and MoCo-v3's momentum encoder copy the model; torch.save of
    the whole model pickles it."""
    model = anyvit.build(
        "vit_small_patch14_reg4_dinov2", 5, "sar", 0.0, local_kwargs("vit_small_patch14_reg4_dinov2"), 64
    )
    torch.save(model, tmp_path / "model.pt")
    x = torch.randn(2, 3, 64, 64)
    for twin in (copy.deepcopy(model), torch.load(tmp_path / "model.pt", weights_only=False)):
        assert type(twin) is type(model) and twin.last_block == "sar"
        for got, want in zip(
            twin.eval().forward_features_with_similarity(x),
            model.eval().forward_features_with_similarity(x),
            strict=True,
        ):
            torch.testing.assert_close(got, want)


def test_the_cost_estimate_builds_a_timm_model_at_the_runs_size():
    """timm builds some of these models for 518 px (DINOv2's): the estimate, like the harness, builds them
    for the size they run at, and without their local weights file."""
    from harness.estimate import count_gmacs

    gmacs = count_gmacs("vit_small_patch14_reg4_dinov2", (("pretrained_file", "/nowhere.pth"),), 224)
    assert 4.0 < gmacs < 7.0  # ViT-S/14 at 224: 16 x 16 patches and 4 registers, about 6 GMACs
