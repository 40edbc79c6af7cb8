"""Tab. 9's recipes say what the issue and the official codes say: the protocols at paper scale, the
pipeline (probes and Jaccards consume the pre-training runs), the local scale, and the paper's arithmetic."""

import pytest

from harness.config import RECIPES_DIR
from harness.recipe import load_recipe
from harness.report import aggregate


@pytest.fixture(scope="module")
def paper():
    recipe, runs = load_recipe(RECIPES_DIR / "table9.yaml")
    return recipe, {run.rows[0]: run for run in runs}


def test_pretraining_follows_the_official_codes_at_the_papers_batches(paper):
    _, runs = paper
    moco = runs["mocov3"].upstream.config
    assert moco.engine == "mocov3" and moco.epochs == 300 and moco.model_kwargs.num_heads == 6
    p = moco.protocol
    assert (p.batch_size, p.lr, p.lr_batch_ref, p.weight_decay, p.warmup_epochs) == (
        1024,
        1.5e-4,
        256,
        0.1,
        40,
    )
    assert (p.mocov3.momentum, p.mocov3.temperature, p.mocov3.mlp_dim, p.mocov3.dim) == (0.99, 0.2, 4096, 256)
    assert p.mocov3.stop_grad_conv1 and p.lr_per_step
    dino = runs["dino"].upstream.config
    d = dino.protocol
    assert (d.batch_size, d.lr, d.lr_batch_ref, d.warmup_epochs, d.min_lr) == (512, 5e-4, 256, 10, 1e-5)
    assert (d.weight_decay, d.dino.weight_decay_end, d.dino.momentum_teacher) == (0.04, 0.4, 0.996)
    assert (d.dino.out_dim, d.dino.local_crops_number, d.dino.local_crop_size) == (65536, 10, 96)
    assert (d.dino.student_temp, d.dino.teacher_temp, d.dino.center_momentum) == (0.1, 0.07, 0.9)
    assert d.dino.freeze_last_layer == 1 and not d.dino.norm_last_layer
    sar = runs["dino-sar"].upstream.config
    assert sar.loss.sar and sar.loss.weight == 0.01 and sar.loss.crops == "global" and sar.last_block == "sar"


def test_probes_and_jaccards_consume_the_pretraining_runs(paper):
    _, runs = paper
    for row in ("mocov3", "mocov3-sar", "dino", "dino-sar"):
        probe, jaccard = runs[row], runs[f"{row}-jaccard"]
        assert probe.config.engine == "linear_probe" and probe.config.epochs == 100
        assert probe.upstream.uid == jaccard.upstream.uid
        assert probe.config.upstream.engine == probe.upstream.config.engine
        assert jaccard.config.eval.input_size == 480 and jaccard.config.eval.keep_mass == 0.6
    assert runs["dino"].config.protocol.probe.features == "last4"
    assert runs["mocov3"].config.protocol.probe.features == "final"
    assert runs["mocov3"].config.protocol.lr == 3.0 and runs["dino"].config.protocol.lr == 1e-3


def test_the_audit_flags_the_printed_mocov3_jaccard_gain(paper):
    recipe, _ = paper
    flagged = aggregate.arithmetic(aggregate.cells(recipe, []))
    assert [(f["id"], f["metric"]) for f in flagged] == [("mocov3-sar-jaccard", "jaccard")]
    assert float(flagged[0]["difference"]) == pytest.approx(5.70)


def test_local_scale_is_sized_for_two_cpu_cores():
    _, runs = load_recipe(RECIPES_DIR / "table9.yaml", ["scale=local"])
    by_row = {run.rows[0]: run for run in runs}
    dino = by_row["dino"].upstream.config
    assert dino.data.dataset == "synthetic" and dino.epochs == 3 and dino.protocol.batch_size == 64
    assert (dino.protocol.dino.local_crop_size, dino.protocol.dino.local_crops_number) == (32, 2)
    assert (
        dino.protocol.dino.out_dim == 1024 and by_row["mocov3"].upstream.config.protocol.mocov3.mlp_dim == 512
    )
    assert by_row["dino"].config.epochs == 10 and {run.seed for run in runs} == {0, 1, 2}


def test_the_figures_share_the_pretraining_runs():
    _, pretraining = load_recipe(RECIPES_DIR / "table9_pretraining.yaml", ["scale=local"])
    uids = {run.rows[0]: run.uid for run in pretraining}
    for name, rows in (("figure6", ["mocov3", "mocov3-sar"]), ("figure7", ["dino", "dino-sar"])):
        _, runs = load_recipe(RECIPES_DIR / f"{name}.yaml", ["scale=local"])
        assert {run.rows[0]: run.uid for run in runs} == {row: uids[row] for row in rows}
        assert {run.table for run in runs} == {"table9_pretraining"}
