"""`benchmarks scaleout`: the rows of a tiny run (their structure and sanity, no timing), the JPEGs' sizes,
and which GPU results the workers-per-GPU figure may come from."""

import json
import math

import pytest

from benchmarks import bench_scaleout
from benchmarks.__main__ import BENCHES, ON_REQUEST

TINY = bench_scaleout.Plan(
    batch=4,
    warmup_steps=1,
    steps_per_block=1,
    blocks=1,
    allreduce_repeats=1,
    jpegs=2,
    jpeg_size=(48, 64),
    data_seconds=0.0,
)


def _gpu_result(device: str, variants: dict[str, float], cpu_smoke: bool = False) -> dict:
    return {
        "machine": {"device": device, "cpu_smoke": cpu_smoke},
        "results": {
            "train_step": {
                "batch": 256,
                "dtype": "bfloat16",
                "variants": {name: {"images_per_s": rate} for name, rate in variants.items()},
            }
        },
    }


@pytest.mark.slow
def test_a_tiny_run_times_one_and_two_processes_and_the_harness_pipeline(tmp_path, capsys):
    rows = bench_scaleout.measure(TINY, gpu_results=tmp_path)
    by_bench: dict[str, list[dict]] = {}
    for row in rows:
        by_bench.setdefault(row["bench"], []).append(row)
    training = by_bench["training"]
    threads = {r["threads_per_process"] for r in training}
    # each thread count in 1 and in 2 processes, once
    assert sorted((r["processes"], r["threads_per_process"]) for r in training) == sorted(
        (size, t) for size in (1, 2) for t in threads
    )
    for r in training:
        assert r["batch"] == 4 and r["per_process_batch"] == 4 // r["processes"]
        assert r["input_size"] == 64  # the local member's
        assert math.isfinite(r["images_per_s"]) and r["images_per_s"] > 0
        assert r["grad_mb"] > 0 and r["cpu_ms_per_step"] > 0 and r["images_per_cpu_s"] > 0
        if r["processes"] == 1:
            assert r["ratio_vs_1_process"] == 1.0 and "allreduce_ms" not in r
        else:
            assert r["allreduce_ms"] > 0
        # the gradient sync against no_sync: in 2 processes of the fewest threads only
        fewest = r["processes"] == 2 and r["threads_per_process"] == min(threads)
        assert ("sync_exposed_ms" in r) == fewest
        assert not fewest or math.isfinite(r["sync_exposed_ms"])
    (data,) = by_bench["data"]
    assert data["jpegs"] == 2 and data["sample_shape"] == [3, 224, 224]  # the paper-scale crop
    for step in ("RandomResizedCrop", "RandomHorizontalFlip", "RandAugment", "Normalize", "RandomErasing"):
        assert step in data["transform"]
    assert data["images_per_s_per_core"] > 0 and data["decode_images_per_s_per_core"] > 0
    assert data["images_per_wall_s"] > 0
    (workers,) = by_bench["workers"]
    assert workers["gpu_images_per_s"] is None and workers["workers_per_gpu"] is None
    assert workers["num_workers"] == 8  # the paper-scale default of data.num_workers
    out = capsys.readouterr().out
    assert "GPU images/s: not measured (no GPU run on record)" in out
    assert "workers per GPU:" not in out


def test_the_generated_jpegs_weigh_what_imagenet_s_do(tmp_path):
    """ImageNet's training JPEGs average about 110 KB at about 500x375."""
    sizes = bench_scaleout.write_imagenet(tmp_path, bench_scaleout.Plan(jpegs=2))
    assert len(sizes) == 2 and all(80_000 < size < 160_000 for size in sizes)
    assert len(list((tmp_path / "val").rglob("*.JPEG"))) == 1


def test_workers_per_gpu_come_from_a_gpu_run_only(tmp_path, capsys):
    (tmp_path / "gpu_smoke.json").write_text(json.dumps(_gpu_result("cpu", {"vit": 9e9}, cpu_smoke=True)))
    (tmp_path / "gpu_broken.json").write_text("{")
    assert bench_scaleout.gpu_images_per_s(tmp_path) is None
    (tmp_path / "gpu.json").write_text(json.dumps(_gpu_result("NVIDIA H100", {"vit": 3000.0, "sar": 2950.0})))
    rate, source = bench_scaleout.gpu_images_per_s(tmp_path)
    assert rate == 3000.0 and "NVIDIA H100" in source and "vit" in source
    row = bench_scaleout.workers(150.0, 8, tmp_path)
    assert row["workers_per_gpu"] == pytest.approx(20.0)
    assert row["num_workers_feed_images_per_s"] == pytest.approx(1200.0)
    assert "workers per GPU: 3000 / 150.0 = 20.0" in capsys.readouterr().out


def test_it_runs_only_when_named():
    assert ON_REQUEST["scaleout"] == "bench_scaleout" and "scaleout" not in BENCHES
