"""connected_components against SciPy's 8-connected labeling, on the CPU (Numba) and the GPU kernel
(Triton; under its interpreter when there is no GPU)."""

import numpy as np
import pytest
import torch

import sar
from sar.kernels.triton_gpu import label_triton
from tests.maps import hard_cases, min_index_labels, random_stacks, same_partition, scipy_labels

GPU = "cuda" if torch.cuda.is_available() else "cpu"  # label_triton on CPU tensors runs interpreted


def _check_stack(name: str, masks: np.ndarray, labels: torch.Tensor) -> None:
    assert labels.shape == masks.shape and labels.dtype == torch.int32, name
    got = labels.cpu().numpy()
    for i, mask in enumerate(masks):
        assert same_partition(scipy_labels(mask), got[i]), f"{name}[{i}]: partition differs from SciPy"
        assert np.array_equal(got[i], min_index_labels(mask)), f"{name}[{i}]: labels are not 1 + min index"


def test_cpu_matches_scipy_on_random_maps():
    rng = np.random.default_rng(0)
    total = 0
    for name, masks in random_stacks(rng, per_case=60):
        _check_stack(name, masks, sar.connected_components(torch.from_numpy(masks)))
        total += len(masks)
    assert total > 3000


@pytest.mark.parametrize("name", sorted(hard_cases()))
def test_cpu_matches_scipy_on_hard_cases(name):
    mask = hard_cases()[name][None]
    _check_stack(name, mask, sar.connected_components(torch.from_numpy(mask)))


@pytest.mark.slow
def test_gpu_kernel_matches_scipy_on_random_maps():
    rng = np.random.default_rng(1)
    for name, masks in random_stacks(rng, per_case=4 if GPU == "cpu" else 60):
        _check_stack(name, masks, label_triton(torch.from_numpy(masks).to(GPU)))


def test_gpu_kernel_matches_scipy_on_hard_cases():
    for name, mask in hard_cases().items():
        _check_stack(name, mask[None], label_triton(torch.from_numpy(mask[None]).to(GPU)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_dispatch_equals_cpu():
    mask = torch.rand(512, 14, 14) > 0.5
    assert torch.equal(sar.connected_components(mask.cuda()).cpu(), sar.connected_components(mask))


def test_stack_layout_does_not_matter():
    mask = torch.rand(6, 10, 12) > 0.5
    expected = sar.connected_components(mask)
    assert torch.equal(sar.connected_components(mask.transpose(1, 2).contiguous().transpose(1, 2)), expected)
    assert torch.equal(sar.connected_components(mask[::2]), expected[::2])


def test_empty_stacks():
    assert sar.connected_components(torch.zeros(0, 14, 14, dtype=torch.bool)).shape == (0, 14, 14)
    assert sar.connected_components(torch.zeros(3, 0, 5, dtype=torch.bool)).shape == (3, 0, 5)


@pytest.mark.parametrize(
    ("mask", "error", "match"),
    [
        (torch.zeros(2, 14, 14), TypeError, "bool mask"),
        (torch.zeros(14, 14, dtype=torch.bool), ValueError, r"\[N, h, w\]"),
        (np.zeros((2, 3, 3), dtype=bool), TypeError, "torch.Tensor"),
        (torch.zeros(1, 2, 65, dtype=torch.bool), ValueError, "at most 64 wide"),
    ],
)
def test_bad_input_is_named(mask, error, match):
    with pytest.raises(error, match=match):
        sar.connected_components(mask)


def test_gpu_kernel_rejects_maps_over_4096_pixels():
    with pytest.raises(ValueError, match="at most 4096 pixels"):
        label_triton(torch.zeros(1, 65, 64, dtype=torch.bool))
