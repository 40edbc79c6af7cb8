"""The run store: atomic writes, a truncated metrics line, and the four states of a run folder."""

import json
import os
import time

from harness.results import (
    HEARTBEAT_FRESH_S,
    append_metrics,
    atomic_write_json,
    read_metrics,
    run_status,
    touch_heartbeat,
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
    result = {"metrics": {"top1": 71.5, "top5": 90.0}, "best": {"top1": 72.0, "epoch": 3}}
    atomic_write_json(tmp_path / "result.json", result)
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
    evaluated = {"metrics": {"imagenet_a_top1": 22.39, "mce": 51.6}, "mce_reference": "alexnet"}
    atomic_write_json(tmp_path / "result.json", evaluated)
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
