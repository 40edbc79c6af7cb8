"""The run store: atomic writes, a truncated metrics line, the four states of a run folder, and
result.json as the typed, versioned `Result` (the release before this one's files read too)."""

import json
import os
import time

import pytest

from harness.core.result import VERSION, Best, Extra, Result
from harness.results import (
    HEARTBEAT_FRESH_S,
    append_metrics,
    atomic_write_json,
    read_metrics,
    read_result,
    run_status,
    touch_heartbeat,
    write_result,
)


def test_atomic_write_leaves_no_temporary_file(tmp_path):
    atomic_write_json(tmp_path / "result.json", {"a": 1})
    atomic_write_json(tmp_path / "result.json", {"a": 2})
    assert json.loads((tmp_path / "result.json").read_text()) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_truncated_metrics_line_is_skipped(tmp_path):
    append_metrics(tmp_path, {"epoch": 1, "val_top1": 10.0})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "val_to')  # a crash in the middle of a write
    assert read_metrics(tmp_path) == [{"epoch": 1, "val_top1": 10.0}]


def test_run_states(tmp_path):
    assert run_status(tmp_path).state == "pending"
    touch_heartbeat(tmp_path, "123")
    append_metrics(tmp_path, {"epoch": 1})
    assert (run_status(tmp_path).state, run_status(tmp_path).detail) == ("running", "1 epoch(s) done")
    stale = time.time() - HEARTBEAT_FRESH_S - 60
    os.utime(tmp_path / "heartbeat", (stale, stale))
    assert run_status(tmp_path).state == "pending"  # a worker that died without a word
    atomic_write_json(tmp_path / "failure.json", {"reason": "the loss was non-finite"})
    assert (run_status(tmp_path).state, run_status(tmp_path).detail) == ("failed", "the loss was non-finite")
    write_result(tmp_path, Result(metrics={"top1": 71.5, "top5": 90.0}, best=Best({"top1": 72.0}, epoch=3)))
    assert (run_status(tmp_path).state, run_status(tmp_path).detail) == (
        "done",
        "top1 71.50 (best 72.00), top5 90.00",
    )
    (tmp_path / "result.json").write_text('{"metrics": {"top1": 7')  # half-written by hand or a broken disk
    assert (run_status(tmp_path).state, run_status(tmp_path).detail) == (
        "failed",
        "result.json: not JSON (Expecting ',' delimiter: line 1 column 23 (char 22))",
    )
    (tmp_path / "failure.json").write_text("{not json")
    (tmp_path / "result.json").unlink()
    assert run_status(tmp_path).detail.startswith("failure.json: not JSON (Expecting property name")


def test_a_result_is_its_metrics_by_name(tmp_path):
    evaluated = Result(metrics={"imagenet_a_top1": 22.39, "mce": 51.6}, extra=Extra(mce_reference="alexnet"))
    write_result(tmp_path, evaluated)
    assert (run_status(tmp_path).state, run_status(tmp_path).detail) == (
        "done",
        "imagenet_a_top1 22.39, mce 51.60",
    )
    for broken, said in (
        ({"final_top1": 71.5, "best_top1": 72.0}, "result.json: no key 'metrics'"),
        ({"metrics": [71.5]}, "result.json: key 'metrics' is [71.5], expected an object whose values"),
        ({"metrics": {"top1": "71.5"}}, "result.json: key 'metrics' is {'top1': '71.5'}, expected an"),
        ({"metrics": {}}, "result.json: key 'metrics' is empty"),
    ):
        atomic_write_json(tmp_path / "result.json", broken)
        status = run_status(tmp_path)
        assert status.state == "failed" and status.detail.startswith(said), broken


def test_a_result_reads_back_as_it_was_written(tmp_path):
    written = Result(
        uid="abc",
        table="table12",
        scale="local",
        engine="segmentation",
        metrics={"miou": 41.5},
        best=Best({"miou": 42.0}, iteration=4),
        wall_time_s=36.0,
        steps=4,
        provenance={"host": "node1", "world_size": 1},
        extra=Extra(per_class_iou=[80.0, None], upstream_keys_unused=["head.bias"]),
    )
    write_result(tmp_path, written)
    stored = json.loads((tmp_path / "result.json").read_text())
    assert stored["version"] == VERSION and stored["extra"] == {
        "per_class_iou": [80.0, None],
        "upstream_keys_unused": ["head.bias"],
    }
    assert read_result(tmp_path) == (written, "")
    assert run_status(tmp_path).result == written


def test_a_result_of_the_release_before_reads(tmp_path):
    """Its layout, as the previous release wrote it: no version, each engine's extras at the top level."""
    previous = {
        "uid": "abc",
        "table": "table5",
        "scale": "paper",
        "engine": "evaluate",
        "metrics": {"imagenet_a_top1": 22.39, "mce": 51.6},
        "imagenet_c_errors": {"fog": [0.1, 0.2, 0.3, 0.4, 0.5]},
        "mce_reference": "alexnet",
        "epochs": 0,
        "wall_time_s": 7.5,
        "gpu_hours": 0.002,
        "skipped_steps": 0,
        "provenance": {"host": "node1", "world_size": 1},
        "a key since dropped": 1,
    }
    atomic_write_json(tmp_path / "result.json", previous)
    result, problem = read_result(tmp_path)
    assert problem == "" and result.version == 0 and result.best is None
    assert (result.engine, result.metrics, result.wall_time_s) == ("evaluate", previous["metrics"], 7.5)
    assert result.extra == Extra(
        imagenet_c_errors={"fog": [0.1, 0.2, 0.3, 0.4, 0.5]}, mce_reference="alexnet"
    )
    trained = {"metrics": {"top1": 71.5}, "best": {"top1": 72.0, "epoch": 3}, "reported": {"what": "final"}}
    atomic_write_json(tmp_path / "result.json", trained)
    result = run_status(tmp_path).result
    assert result.best == Best({"top1": 72.0}, epoch=3) and result.extra.reported == {"what": "final"}


@pytest.mark.parametrize(
    ("broken", "said"),
    [
        ({"version": VERSION + 1}, f"key 'version' is {VERSION + 1}, expected a layout this harness reads"),
        ({"version": "1"}, "key 'version' is '1', expected a layout"),
        (
            {"extra": {"per_class_iou": "80"}},
            "result.json key 'extra': key 'per_class_iou' is '80', expected a list",
        ),
        ({"extra": [1]}, "key 'extra' is [1], expected an object"),
        ({"jaccard_void": 1}, "key 'jaccard_void' is 1, expected a string"),  # an old file's place
    ],
)
def test_a_result_of_another_layout_is_a_problem_naming_the_key(tmp_path, broken, said):
    good = Result(metrics={"top1": 71.5}).to_json()
    atomic_write_json(tmp_path / "result.json", {**good, **broken})
    status = run_status(tmp_path)
    assert status.state == "failed" and said in status.detail, status.detail
