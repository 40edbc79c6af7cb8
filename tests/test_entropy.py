"""spatial_entropy, tv_loss and cls_similarity against independent float64 references written from the
paper's formulas (Eq. 4-9, 14, 15), with SciPy's labels."""

import math

import numpy as np
import pytest
import torch

import sar
from sar.kernels.numba_cpu import entropy_numba
from sar.kernels.triton_gpu import entropy_triton
from tests.maps import scipy_labels


def reference_entropy(S: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """Per-map spatial entropy [B, H] in float64, map by map, one mask per component (Eq. 5-8, 12-13)."""
    S = S.double()
    out = []
    for smap in S.reshape(-1, *S.shape[-2:]):
        m = smap.mean()
        B = torch.relu(smap - m) + eps
        labels = scipy_labels((smap > m).detach().numpy())
        h = smap.new_zeros(())
        for lab in range(1, labels.max() + 1):
            p = (B * torch.from_numpy(labels == lab)).sum() / B.sum()
            h = h - p * torch.log(p)
        out.append(h)
    return torch.stack(out).reshape(S.shape[:2])


def smooth_maps(*shape: int, seed: int = 0) -> torch.Tensor:
    """Maps with a few blobs, like trained attention, as a float32 tensor."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g)
    kernel = torch.ones(1, 1, 3, 3) / 9
    flat = x.reshape(-1, 1, *shape[-2:])
    return torch.nn.functional.conv2d(flat, kernel, padding=1).reshape(shape)


@pytest.mark.parametrize(
    "shape", [(4, 6, 14, 14), (2, 3, 7, 7), (2, 2, 28, 28), (3, 1, 5, 9), (1, 4, 64, 64)]
)
@pytest.mark.parametrize("maps", ["random", "smooth"])
def test_value_and_gradient_match_reference(shape, maps):
    S = (
        torch.randn(*shape, generator=torch.Generator().manual_seed(3))
        if maps == "random"
        else smooth_maps(*shape)
    )
    S.requires_grad_(True)
    ours = sar.spatial_entropy(S, reduction="none")
    ours.backward(torch.linspace(0.5, 1.5, ours.numel()).reshape(ours.shape))

    S64 = S.detach().double().requires_grad_(True)
    ref = reference_entropy(S64)
    ref.backward(torch.linspace(0.5, 1.5, ref.numel(), dtype=torch.float64).reshape(ref.shape))

    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours.double(), ref.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(S.grad.double(), S64.grad, rtol=1e-4, atol=1e-6)


def test_mean_reduction_is_eq9_averaged_over_batch():
    S = torch.randn(5, 6, 14, 14)
    expected = reference_entropy(S).sum() / (5 * 6)
    torch.testing.assert_close(sar.spatial_entropy(S).double(), expected, rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_gradcheck_float64():
    S = torch.randn(2, 3, 6, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda s: sar.spatial_entropy(s, reduction="none"), (S,), eps=1e-7, atol=1e-6
    )


def test_entropy_of_known_maps():
    one_blob = torch.zeros(1, 1, 5, 5)
    one_blob[..., 1:3, 1:3] = 1.0
    assert sar.spatial_entropy(one_blob).item() == pytest.approx(0.0, abs=1e-6)
    two_equal = torch.zeros(1, 1, 5, 5)
    two_equal[..., 0, 0] = two_equal[..., 4, 4] = 1.0
    assert sar.spatial_entropy(two_equal).item() == pytest.approx(math.log(2), abs=1e-6)
    diagonal = torch.eye(5)[None, None]  # one component through diagonal links only
    assert sar.spatial_entropy(diagonal).item() == pytest.approx(0.0, abs=1e-6)


def test_invariances():
    S = torch.randn(4, 6, 14, 14, dtype=torch.float64)
    base = sar.spatial_entropy(S, reduction="none")
    perm = torch.randperm(6)
    torch.testing.assert_close(sar.spatial_entropy(S[:, perm], reduction="none"), base[:, perm])
    torch.testing.assert_close(sar.spatial_entropy(S + 3.25, reduction="none"), base, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(sar.spatial_entropy(S * 7.5, reduction="none"), base, rtol=1e-7, atol=1e-7)
    bperm = torch.randperm(4)
    torch.testing.assert_close(sar.spatial_entropy(S[bperm], reduction="none"), base[bperm])


def test_flat_map_contributes_zero_with_zero_gradient():
    S = torch.randn(2, 3, 14, 14)
    S[1, 2] = 0.7
    S.requires_grad_(True)
    values = sar.spatial_entropy(S, reduction="none")
    values.sum().backward()
    assert values[1, 2].item() == 0.0
    assert torch.all(S.grad[1, 2] == 0)
    assert torch.all(values[0] > 0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_propagates_without_crashing(bad):
    S = torch.randn(2, 3, 14, 14)
    S[0, 1, 3, 4] = bad
    S.requires_grad_(True)
    values = sar.spatial_entropy(S, reduction="none")
    assert math.isnan(values[0, 1].item())
    assert torch.isfinite(values[1]).all() and torch.isfinite(values[0, [0, 2]]).all()
    assert math.isnan(sar.spatial_entropy(S).item())
    values.nan_to_num(0.0).sum().backward()
    assert torch.isfinite(S.grad).all()


def test_float32_under_autocast_and_for_half_inputs():
    S = torch.randn(2, 6, 14, 14)
    expected = sar.spatial_entropy(S.bfloat16().float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = sar.spatial_entropy(S.bfloat16())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected)
    assert sar.spatial_entropy(S.half()).dtype == torch.float32
    assert sar.spatial_entropy(S.double()).dtype == torch.float64


def test_eps_enters_as_in_eq5():
    S = torch.randn(3, 2, 7, 7, dtype=torch.float64)
    for eps in (0.0, 1e-9, 1e-2):
        torch.testing.assert_close(
            sar.spatial_entropy(S, eps=eps, reduction="none"), reference_entropy(S, eps)
        )


def test_gpu_kernel_matches_cpu_kernel():
    device = "cuda" if torch.cuda.is_available() else "cpu"  # on the CPU: Triton's interpreter
    S = torch.cat([torch.randn(24, 196), smooth_maps(8, 14, 14).reshape(8, 196)])
    S[3] = 0.25
    S[5, 11] = float("nan")
    for dtype in (torch.float32, torch.float64):
        x = S.to(dtype)
        h_cpu, g_cpu = entropy_numba(x.numpy(), 14, 14, 1e-9, True)
        h_gpu, g_gpu = entropy_triton(x.to(device), 14, 14, 1e-9, True)
        tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-12}
        torch.testing.assert_close(h_gpu.cpu(), torch.from_numpy(h_cpu), equal_nan=True, **tol)
        torch.testing.assert_close(g_gpu.cpu(), torch.from_numpy(g_cpu), **tol)


def test_no_gradient_work_without_requires_grad():
    value, grad = entropy_numba(np.random.default_rng(0).standard_normal((4, 49)), 7, 7, 1e-9, False)
    assert value.shape == (4,) and grad.shape == (4, 0)


def test_compiles_without_graph_breaks():
    S = torch.randn(2, 6, 14, 14, requires_grad=True)
    compiled = torch.compile(lambda s: sar.spatial_entropy(s) * 2.0, backend="aot_eager", fullgraph=True)
    out = compiled(S)
    out.backward()
    torch.testing.assert_close(out, sar.spatial_entropy(S.detach()) * 2.0)
    assert S.grad is not None and torch.isfinite(S.grad).all()


@pytest.mark.parametrize(
    ("S", "kwargs", "error", "match"),
    [
        (torch.randn(6, 14, 14), {}, ValueError, r"\[B, H, k, k\]"),
        (torch.ones(1, 1, 3, 3, dtype=torch.long), {}, TypeError, "floating-point"),
        (torch.randn(1, 1, 3, 3), {"reduction": "sum"}, ValueError, "reduction"),
        (torch.randn(1, 1, 3, 3), {"eps": -1.0}, ValueError, "eps"),
        ([[1.0]], {}, TypeError, "torch.Tensor"),
    ],
)
def test_bad_input_is_named(S, kwargs, error, match):
    with pytest.raises(error, match=match):
        sar.spatial_entropy(S, **kwargs)


def test_tv_loss_is_eq14():
    S = torch.randn(3, 4, 6, 5, dtype=torch.float64)
    expected = torch.zeros(3, 4, dtype=torch.float64)
    for x in range(6):
        for y in range(5):
            if y + 1 < 5:
                expected += (S[..., x, y] - S[..., x, y + 1]).abs()
            if x + 1 < 6:
                expected += (S[..., x, y] - S[..., x + 1, y]).abs()
    torch.testing.assert_close(sar.tv_loss(S, reduction="none"), expected)
    torch.testing.assert_close(sar.tv_loss(S), expected.mean())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert sar.tv_loss(S.float().bfloat16()).dtype == torch.float32


def test_cls_similarity_dot_and_cosine():
    q = torch.randn(2, 3, 8, dtype=torch.float64)
    k = torch.randn(2, 3, 12, 8, dtype=torch.float64)
    dot = sar.cls_similarity(q, k, grid=(3, 4))
    cos = sar.cls_similarity(q, k, grid=(3, 4), kind="cosine")
    for b in range(2):
        for h in range(3):
            for n in range(12):
                expected = float(q[b, h] @ k[b, h, n])
                assert dot[b, h, n // 4, n % 4].item() == pytest.approx(expected / math.sqrt(8))
                assert cos[b, h, n // 4, n % 4].item() == pytest.approx(
                    expected / float(q[b, h].norm() * k[b, h, n].norm())
                )
    torch.testing.assert_close(sar.cls_similarity(q, k, grid=(3, 4), scale=0.25), dot * math.sqrt(8) * 0.25)
    assert sar.cls_similarity(q, torch.randn(2, 3, 16, 8, dtype=torch.float64)).shape == (2, 3, 4, 4)
    with pytest.raises(ValueError, match="square grid"):
        sar.cls_similarity(q, k)
    with pytest.raises(ValueError, match="kind"):
        sar.cls_similarity(q, k, grid=(3, 4), kind="l2")
