"""Spatial-entropy loss: forward + backward of `sar.spatial_entropy` against the reference approach
(per-map OpenCV labeling in a Python loop, one dense mask per blob) and SciPy's labeling of the whole
stack (labeling only), all measured in this run. On a GPU also [256, 6, 14, 14] with CUDA events."""

import numpy as np
import scipy.ndimage as ndi
import torch

import sar
from benchmarks.reference_loss import reference_spatial_entropy
from benchmarks.timing import cuda_graph_seconds, cuda_median_seconds, median_seconds

CPU_SHAPES = [(128, 6, 14, 14), (128, 6, 7, 7), (128, 6, 28, 28), (512, 6, 14, 14)]
HEADLINE = (128, 6, 14, 14)  # one ViT-S/16 GPU batch of the paper
GPU_SHAPE = (256, 6, 14, 14)
# a slice-by-slice 8-connectivity structure: SciPy labels every map of the stack independently
SCIPY_STRUCTURE = np.zeros((3, 3, 3), dtype=bool)
SCIPY_STRUCTURE[1] = True


def _fwd_bwd(loss_fn, S: torch.Tensor):
    def step():
        S.grad = None
        loss_fn(S).backward()

    return step


def _check_same_loss(S: torch.Tensor) -> None:
    ours, ref = sar.spatial_entropy(S.detach()).item(), reference_spatial_entropy(S.detach()).item()
    if abs(ours - ref) > 1e-4 * max(1.0, abs(ref)):
        raise AssertionError(f"the loss and its reference disagree: {ours} vs {ref}")


def bench_cpu_shape(shape: tuple[int, ...], quick: bool) -> dict:
    S = torch.randn(*shape, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    _check_same_loss(S)
    mask_np = (S.detach() > S.detach().mean(dim=(-2, -1), keepdim=True)).flatten(0, 1).numpy()
    mask = torch.from_numpy(mask_np)
    repeats = 5 if quick else 30
    ours = median_seconds(_fwd_bwd(sar.spatial_entropy, S), repeats=repeats * 4, min_seconds=1.0)
    ref = median_seconds(_fwd_bwd(reference_spatial_entropy, S), repeats=repeats, warmup=1)
    scipy_label = median_seconds(lambda: ndi.label(mask_np, structure=SCIPY_STRUCTURE), repeats=repeats * 2)
    ours_label = median_seconds(lambda: sar.connected_components(mask), repeats=repeats * 4)
    return {
        "device": "cpu",
        "shape": list(shape),
        "sar_fwd_bwd_ms": ours * 1e3,
        "reference_fwd_bwd_ms": ref * 1e3,
        "scipy_label_ms": scipy_label * 1e3,
        "sar_label_ms": ours_label * 1e3,
        "speedup_vs_reference": ref / ours,
        "speedup_vs_scipy_label": scipy_label / ours,
    }


def bench_gpu() -> list[dict]:
    S = torch.randn(*GPU_SHAPE, device="cuda").requires_grad_(True)
    _check_same_loss(S)
    step = _fwd_bwd(sar.spatial_entropy, S)
    eager = cuda_median_seconds(step, repeats=200)
    graphed = cuda_graph_seconds(lambda: sar.spatial_entropy(S).backward(), repeats=200)
    ref = median_seconds(_fwd_bwd(reference_spatial_entropy, S), repeats=10, warmup=1)
    return [
        {
            "device": torch.cuda.get_device_name(),
            "shape": list(GPU_SHAPE),
            "sar_fwd_bwd_ms": eager * 1e3,
            "sar_fwd_bwd_cuda_graph_ms": graphed * 1e3,
            "reference_fwd_bwd_ms": ref * 1e3,
            "speedup_vs_reference": ref / eager,
        }
    ]


def report(rows: list[dict]) -> None:
    print("\nspatial entropy, forward + backward (median wall time)")
    for r in rows:
        shape = "x".join(map(str, r["shape"]))
        if r["device"] == "cpu":
            print(
                f"  cpu {shape:>14}: sar {r['sar_fwd_bwd_ms']:7.3f} ms"
                f" | reference {r['reference_fwd_bwd_ms']:8.2f} ms ({r['speedup_vs_reference']:5.1f}x)"
                f" | scipy label only {r['scipy_label_ms']:6.3f} ms ({r['speedup_vs_scipy_label']:4.2f}x)"
                f" | sar label only {r['sar_label_ms']:6.3f} ms"
            )
        else:
            print(
                f"  {r['device']} {shape}: sar {r['sar_fwd_bwd_ms']:.3f} ms eager,"
                f" {r['sar_fwd_bwd_cuda_graph_ms']:.3f} ms in a CUDA graph | reference"
                f" {r['reference_fwd_bwd_ms']:.2f} ms ({r['speedup_vs_reference']:.0f}x)"
            )
    head = next(r for r in rows if r["device"] == "cpu" and tuple(r["shape"]) == HEADLINE)
    vs_ref, vs_scipy = head["speedup_vs_reference"], head["speedup_vs_scipy_label"]
    print(
        f"  targets at {HEADLINE}: >= 30x the reference: {vs_ref:.1f}x [{_verdict(vs_ref >= 30)}];"
        f" no slower than SciPy labeling: {vs_scipy:.2f}x [{_verdict(vs_scipy >= 1)}]"
    )
    for r in rows:
        if r["device"] != "cpu":
            ok = r["sar_fwd_bwd_ms"] < 0.2
            print(
                f"  target on the GPU: < 0.2 ms: {r['sar_fwd_bwd_ms']:.3f} ms [{'met' if ok else 'MISSED'}]"
            )


def _verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def run(quick: bool = False) -> list[dict]:
    rows = [bench_cpu_shape(shape, quick) for shape in (CPU_SHAPES[:1] if quick else CPU_SHAPES)]
    if torch.cuda.is_available():
        rows += bench_gpu()
    report(rows)
    return rows
