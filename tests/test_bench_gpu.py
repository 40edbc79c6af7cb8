"""`python -m benchmarks gpu`: the one command a GPU session runs, exercised here end to end on the CPU
(`--cpu-smoke`: the Triton kernels interpreted, a tiny ViT), so that on the GPU it only has to run."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import bench_gpu
from benchmarks.bench_gpu import EXIT_NO_GPU, SMOKE, canonical_labels

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("correctness", "loss", "train_step", "host_sync", "attach")


def _run(*args: str, interpret: bool) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", "gpu", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "gpu.json"
    proc = _run("--cpu-smoke", "--out", str(out), interpret=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


def _positive(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


@pytest.mark.slow
def test_every_section_ran_and_nothing_failed(smoke):
    assert smoke["failures"] == []
    assert set(smoke["results"]) == set(SECTIONS)
    for name in SECTIONS:
        assert "error" not in smoke["results"][name], name
        assert _positive(smoke["results"][name]["seconds"]), name
    assert smoke["machine"]["cpu_smoke"] is True and smoke["machine"]["triton_interpret"] == "1"


@pytest.mark.slow
def test_gpu_kernels_match_numba_on_every_case(smoke):
    result = smoke["results"]["correctness"]
    assert result["path"] == "triton kernels, interpreted"
    assert result["maps"] >= 72 and len(result["cases"]) == 36
    for key in ("label_mismatches", "value_mismatches", "grad_mismatches"):
        assert result[key] == 0 and all(case[key] == 0 for case in result["cases"]), key
    assert 0 <= result["worst_value_diff_to_tolerance"] < 1
    assert 0 <= result["worst_grad_diff_to_tolerance"] < 1


@pytest.mark.slow
def test_loss_section_has_its_figures(smoke):
    result = smoke["results"]["loss"]
    for key in ("sar_fwd_bwd_ms", "reference_fwd_bwd_ms", "speedup_vs_reference", "loss"):
        assert _positive(result[key]), key
    assert result["loss_rel_diff_vs_reference"] < 1e-3
    # measured on CUDA only: off it there is nothing to count, and no verdict
    assert result["syncs_in_fwd_bwd"] is None and result["sar_fwd_bwd_cuda_graph_ms"] is None
    assert result["goal_met"] is None


@pytest.mark.slow
@pytest.mark.parametrize(
    ("section", "variants", "ratios"),
    [
        (
            "train_step",
            ("vit", "engine_baseline", "sar"),
            ("sar_overhead_pct", "sar_overhead_vs_engine_baseline_pct", "engine_baseline_overhead_pct"),
        ),
        ("host_sync", ("new_core", "previous_engine"), ("previous_over_new_pct",)),
    ],
)
def test_training_sections_time_every_variant(smoke, section, variants, ratios):
    result = smoke["results"][section]
    assert set(result["variants"]) == set(variants)
    for name in variants:
        timing = result["variants"][name]
        assert _positive(timing["ms_per_step"]) and _positive(timing["images_per_s"]), name
        assert len(timing["ms_per_step_blocks"]) == result["blocks"], name
    for key in ratios:
        assert math.isfinite(result[key]), key


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="there is a GPU here")
def test_without_a_gpu_it_says_so_and_exits_with_its_own_code(tmp_path):
    proc = _run("--out", str(tmp_path / "gpu.json"), interpret=False)
    assert proc.returncode == EXIT_NO_GPU
    assert "needs a CUDA GPU" in proc.stderr and "--cpu-smoke" in proc.stderr
    assert not (tmp_path / "gpu.json").exists()


def test_canonical_labels_ignore_the_numbering():
    labels = torch.tensor([[[0, 7, 7], [3, 0, 7], [3, 3, 0]], [[5, 5, 0], [0, 0, 0], [0, 9, 9]]])
    expected = torch.tensor([[[0, 2, 2], [4, 0, 2], [4, 4, 0]], [[1, 1, 0], [0, 0, 0], [0, 8, 8]]])
    assert torch.equal(canonical_labels(labels), expected)
    renumbered = torch.where(labels > 0, 100 - labels, 0)
    assert torch.equal(canonical_labels(renumbered), expected)


def test_a_failing_section_is_recorded_and_the_others_still_run(tmp_path, monkeypatch, capsys):
    def broken(plan, device):
        raise RuntimeError("no such kernel")

    monkeypatch.setitem(bench_gpu.SECTIONS, "loss", broken)
    monkeypatch.setitem(bench_gpu.SECTIONS, "correctness", lambda plan, device: {"label_mismatches": 2})
    out = tmp_path / "gpu.json"
    found = bench_gpu.run(SMOKE, torch.device("cpu"), ["loss", "correctness"], out, cpu_smoke=True)
    assert found == ["loss: RuntimeError: no such kernel", "correctness: 2 label mismatches"]
    written = json.loads(out.read_text())
    assert written["failures"] == found and written["results"]["correctness"]["label_mismatches"] == 2
    assert "FAILED correctness: 2 label mismatches" in capsys.readouterr().out


@pytest.mark.slow
def test_the_attach_section_times_a_timm_family_with_and_without_sar(smoke):
    """On the GPU every family of `benchmarks attach` in bf16; the smoke run: ViT-S/16 at batch 2."""
    (row,) = smoke["results"]["attach"]["rows"]
    assert (row["family"], row["device"], row["dtype"]) == ("ViT-S/16", "cpu", "float32")
    assert _positive(row["baseline_ms"]) and _positive(row["sar_ms"]) and _positive(row["sar_time_ratio"])
    assert row["S_shape"] == [2, 6, 14, 14] and row["S_bytes"] == 4 * 2 * 6 * 14 * 14
