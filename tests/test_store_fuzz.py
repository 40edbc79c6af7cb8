"""Broken run folders are listed, never fatal: random bytes, truncations, empty files and JSON of the
wrong types in every kind of file a run folder holds, one broken file per run, then `status`, `report`
and `run --dry-run` over the whole store: nothing crashes, and each broken run is listed with its file."""

import json
import os
import random
import shutil
import socket
from pathlib import Path

import pytest
import torch

from harness.cli import main
from harness.recipe import load_recipe
from tests.harness_fixtures import TINY_OVERRIDES, write_tiny

WRONG = ["wrong"]  # of no kind any reader accepts: not a string, number, flag or object
HOST = socket.gethostname()
# the files a run folder holds beside those training leaves, each as its reader expects it
WRITTEN = {
    "submitted.json": {"launcher": "local", "job_id": str(os.getpid()), "host": HOST, "stderr": "/l/x.err"},
    "trainer.lock": {"job_id": "inline", "launcher": "inline", "host": HOST, "pid": os.getpid()},
    "failure.json": {"reason": "the loss was non-finite", "rank": 0, "time": 2.0, "host": HOST},
    "failure-rank1.json": {"reason": "NCCL timeout", "rank": 1, "time": 1.0, "host": HOST},
    "partial.json": {"imagenet_c": {"fog/3": 0.125}},
}
# the keys each file's readers use (and those it must have), each of which is set to a wrong type in turn
KEYS = {
    "result.json": ["version", "metrics", "best", "gpu_hours", "wall_time_s", "steps", "provenance", "extra"],
    "heartbeat": ["time", "epoch", "epochs", "step", "steps", "images_per_s", "pid", "job_id"],
    "submitted.json": ["launcher", "job_id", "host", "stderr"],
    "trainer.lock": ["job_id", "launcher", "host", "pid"],
    "failure.json": ["reason", "rank", "time"],
    "failure-rank1.json": ["reason", "rank", "time"],
    "partial.json": ["imagenet_c"],
    "metrics.jsonl": ["epoch", "val_top1"],
    "provenance.jsonl": ["git_commit", "epoch"],
}
REQUIRED = {
    "result.json": ["metrics"],
    "submitted.json": ["launcher", "job_id", "host"],
    "trainer.lock": ["job_id", "host", "pid"],
    "failure.json": ["reason"],
    "failure-rank1.json": ["reason"],
}
NESTED = {
    "result.json": {
        "provenance": ["packages", "git_commit", "git_dirty", "host", "world_size"],
        "extra": ["reported", "jaccard_void", "per_class_iou"],
    }
}
NOT_DONE = {"failure.json", "failure-rank1.json", "heartbeat", "submitted.json", "trainer.lock"}
UNREAD = ("config.yaml", "events")  # for people and TensorBoard only: broken, they change nothing


def _corruptions(name: str, good: bytes) -> dict[str, bytes]:
    """Every way `good` (the file as written) is broken here."""
    rng = random.Random(name)
    cut = len(good) // 2
    cases = {
        "random bytes": b"\xff" + bytes(rng.randrange(256) for _ in range(700)),
        "truncated": good[:cut] if good[cut - 1 : cut] != b"\n" else good[: cut - 1],
    }
    if name.endswith((".json", ".lock")) or name == "heartbeat" or name.endswith(".pt"):
        cases["empty"] = b""
    if name.endswith(".pt") or name in UNREAD:
        return cases
    if name.endswith(".jsonl"):
        line = json.loads(good.splitlines()[0])
        bad_lines = {"not an object": b"[1, 2]", "nested too deep": b"[" * 50_000 + b"]" * 50_000}
        bad_lines |= {f"key {key}": json.dumps({**line, key: WRONG}).encode() for key in KEYS[name]}
        return cases | {kind: good + text + b"\n" for kind, text in bad_lines.items()}
    data = json.loads(good)
    cases |= {
        "a list": b"[1, 2]",
        "a string": b'"x"',
        "null": b"null",
        "nested too deep": b"[" * 50_000 + b"]" * 50_000,
        "an integer beyond the digit limit": b"1" * 5000,
    }
    cases |= {f"key {key}": json.dumps({**data, key: WRONG}).encode() for key in KEYS[name]}
    cases |= {
        f"no key {key}": json.dumps({k: v for k, v in data.items() if k != key}).encode()
        for key in REQUIRED.get(name, [])
    }
    for key, inner_keys in NESTED.get(name, {}).items():
        cases |= {
            f"key {key}.{inner}": json.dumps({**data, key: {**data[key], inner: WRONG}}).encode()
            for inner in inner_keys
        }
    return cases


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """A done run of each tiny row (one epoch): the files training leaves."""
    folder = tmp_path_factory.mktemp("trained")
    recipe = write_tiny(folder, folder / "runs")
    overrides = [*TINY_OVERRIDES, "epochs=1", "launcher=inline"]
    assert main(["run", str(recipe), *overrides]) == 0
    return {run.rows[0]: run.folder for run in load_recipe(recipe, overrides)[1]}


def _good(name: str, template: Path) -> bytes:
    if name in WRITTEN:
        return json.dumps(WRITTEN[name]).encode()
    if name == "events":
        return next(template.glob("events.*")).read_bytes()
    return (template / name).read_bytes()


@pytest.mark.slow
def test_a_broken_file_of_any_kind_is_listed_and_never_fatal(tmp_path, trained, capsys):
    names = [*WRITTEN, "result.json", "heartbeat", "metrics.jsonl", "provenance.jsonl"]
    names += ["checkpoint.pt", "checkpoint-best.pt", *UNREAD]
    cases = [
        (name, kind, data)
        for name in names
        for kind, data in _corruptions(name, _good(name, trained["base"])).items()
    ]
    recipe = write_tiny(tmp_path, tmp_path / "runs")
    seeds = f"seeds=[{','.join(str(s) for s in range((len(cases) + 1) // 2))}]"
    overrides = [*TINY_OVERRIDES, "epochs=1", "launcher=inline", seeds]
    runs = load_recipe(recipe, overrides)[1]
    broken = {}
    for run, (name, kind, data) in zip(runs, cases, strict=False):
        shutil.copytree(trained[run.rows[0]], run.folder)
        if name in NOT_DONE:  # these files are read by the state of a run that is not done
            (run.folder / "result.json").unlink()
        for other in ("submitted.json", "trainer.lock", "partial.json"):
            if other != name:  # each of them decides the state where it is: one at a time
                (run.folder / other).unlink(missing_ok=True)
        if name == "heartbeat":  # a local job of a live process: running, its heartbeat read
            (run.folder / "submitted.json").write_text(json.dumps(WRITTEN["submitted.json"]))
        if name == "failure-rank1.json":
            (run.folder / "failure.json").write_text(json.dumps(WRITTEN["failure.json"]))
        target = next(run.folder.glob("events.*")) if name == "events" else run.folder / name
        target.write_bytes(data)
        broken[run.uid] = (name, kind)

    assert main(["status", str(recipe), *overrides]) == 0
    status = capsys.readouterr().out
    assert main(["report", str(recipe), *overrides, "--out", str(tmp_path / "reports")]) == 0
    report = (tmp_path / "reports" / "tiny.md").read_text()
    assert main(["run", str(recipe), *overrides, "--dry-run"]) == 0
    capsys.readouterr()
    for uid, (name, kind) in broken.items():
        said = " ".join(line for line in status.splitlines() if uid in line)
        if name in UNREAD:
            assert "broken" not in said and f"{uid}: " not in report, (name, kind)
            continue
        assert name in said, (name, kind, said)  # failure files are the state itself: in the table
        if not name.startswith("failure"):
            assert f"{uid}: {name}" in report, (name, kind)


class Payload:
    """What a hostile checkpoint pickles: running it would leave a file behind."""

    def __init__(self, witness: Path) -> None:
        self.witness = witness

    def __reduce__(self):
        return (os.system, (f"touch {self.witness}",))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["random bytes", "truncated", "model not a mapping", "a tensor", "code"])
def test_a_checkpoint_the_attention_figure_cannot_use_is_a_problem(tmp_path, trained, kind):
    recipe = write_tiny(tmp_path, tmp_path / "runs")
    overrides = [*TINY_OVERRIDES, "epochs=1", "launcher=inline"]
    runs = {run.rows[0]: run for run in load_recipe(recipe, overrides)[1]}
    for row, run in runs.items():
        shutil.copytree(trained[row], run.folder)
    target, witness = runs["sar"].folder / "checkpoint.pt", tmp_path / "executed"
    good = target.read_bytes()
    if kind == "random bytes":
        target.write_bytes(b"\xff" + os.urandom(2000))
    elif kind == "truncated":
        target.write_bytes(good[: len(good) // 2])
    else:
        payload = {"model": [1, 2]} if kind == "model not a mapping" else torch.zeros(3)
        torch.save({"model": Payload(witness)} if kind == "code" else payload, target)
    assert main(["report", str(recipe), *overrides, "--out", str(tmp_path / "reports")]) == 0
    report = (tmp_path / "reports" / "tiny.md").read_text()
    assert "attention maps: a checkpoint could not be used: attention figure: checkpoint" in report
    assert str(target.parent) in report and not witness.exists()  # a long message keeps its ends
