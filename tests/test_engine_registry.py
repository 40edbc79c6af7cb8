"""An engine is one registered spec: a toy engine declared in this file alone, with its own protocol schema
and protocol file, goes through validation, `run --dry-run`, an inline run, `status` and `report`."""

from dataclasses import dataclass
from pathlib import Path

import pytest

from harness import distributed
from harness.cli import main
from harness.config.fields import computed
from harness.config.protocols import ProtocolBase
from harness.core.result import Outcome
from harness.engines.spec import Consumes, EngineSpec, Progress, Provides, engines, register, unregister
from harness.recipe import load_recipe


@dataclass
class ToyProtocol(ProtocolBase):
    """The toy engine's protocol: what it reads."""

    answer: float = computed()


def _run(cfg, uid: str, world: distributed.World, folder: Path) -> Outcome:
    return Outcome(metrics={"top1": cfg.protocol.answer + cfg.seed}, epochs=cfg.epochs)


TOY = EngineSpec(
    name="toy",
    run=_run,
    protocol=ToyProtocol,
    description="answers without training (a test's engine)",
    consumes=Consumes.nothing,
    provides=Provides.nothing,
    progress=Progress.epoch,
    loss="toy",
    cost=lambda cfg, gmacs: cfg.epochs * gmacs(cfg.data.input_size),
    metrics=("top1",),
)
RECIPE = """
defaults: [recipe_schema, {{protocol: toy}}, _self_]
name: toy
title: "Toy: an engine of a test"
reproduces: "nothing"
engine: toy
model: sar_vit_tiny_patch16_224
model_kwargs: {{img_size: 32, patch_size: 8, embed_dim: 48, depth: 2, num_heads: 3}}
dataset: synthetic
data: {{input_size: 32}}
epochs: 1
seeds: [0, 1]
resources: {{gpus_per_node: 0}}
launcher: {{name: inline}}
train: {{progress: false}}
runs_root: {runs}
rows:
  - {{id: base, label: "Toy", last_block: standard, paper: {{top1: 42.0}}}}
  - {{id: sar, label: "Toy + SAR", baseline: base, last_block: sar, loss: {{sar: true}}}}
"""


@pytest.fixture
def toy(tmp_path: Path):
    register(TOY)
    (tmp_path / "protocol").mkdir()
    (tmp_path / "protocol" / "toy.yaml").write_text(
        "defaults: [schema_toy, _self_]\nname: toy\namp: 'off'\nanswer: 41.5\n"
    )
    recipe = tmp_path / "toy.yaml"
    recipe.write_text(RECIPE.format(runs=tmp_path / "runs"))
    yield recipe
    unregister("toy")


def test_a_registered_engine_validates_runs_reports_and_says_so(toy, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "toy" in engines()
    _, runs = load_recipe(toy)
    assert {(tuple(r.rows), r.seed) for r in runs} == {
        (("base",), 0),
        (("base",), 1),
        (("sar",), 0),
        (("sar",), 1),
    }
    assert set(runs[0].config.protocol) == {"name", "description", "amp", "answer"}  # what the engine reads
    assert main(["run", str(toy), "protocol.answer=many"]) == 2
    assert "key 'protocol.answer'" in capsys.readouterr().err
    assert main(["run", str(toy), "protocol=deit"]) == 2  # a protocol that is not the toy's
    assert (
        "key 'protocol': got 'deit', expected a protocol with 'answer', which engine toy reads"
        in capsys.readouterr().err
    )
    assert main(["run", str(toy), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "toy + 0.01 L_se" in out and "CPU-h" in out and "launch" in out
    assert main(["run", str(toy)]) == 0
    assert all((run.folder / "result.json").is_file() for run in runs)
    assert main(["status", str(toy)]) == 0
    out = capsys.readouterr().out
    assert out.count("done") >= len(runs) and runs[0].folder.name.startswith("base-s0-")
    assert main(["report", str(toy), "--out", str(tmp_path / "reports")]) == 0
    report = (tmp_path / "reports" / "toy.md").read_text()
    assert "| Toy | 42.0 ± 0.7 | 42.0 |" in report  # 41.5 and 42.5 over the seeds


def test_list_engines_reads_the_registry(toy, capsys):
    assert main(["list", "engines"]) == 0
    out = capsys.readouterr().out
    assert "answers without training (a test's engine)" in out
    assert "segmentation  backbone  iteration  pixel ce" in out
