"""`connected_components`: 8-connected labeling of a stack of boolean maps, dispatched by device.

CPU tensors go to the Numba kernel, CUDA tensors to the Triton kernel; both give the same labels. The op
is a `torch.library` custom op, so `torch.compile` and CUDA graphs see one opaque node, not a graph break.
"""

import torch

from sar.kernels.numba_cpu import label_numba


@torch.library.custom_op("sar::connected_components", mutates_args=(), device_types="cpu")
def _connected_components(mask: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(label_numba(mask.numpy()))


@_connected_components.register_kernel("cuda")
def _connected_components_cuda(mask: torch.Tensor) -> torch.Tensor:
    from sar.kernels.triton_gpu import label_triton  # triton is needed only where there is a GPU

    return label_triton(mask)


@_connected_components.register_fake
def _connected_components_fake(mask: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(mask, dtype=torch.int32)


def connected_components(mask: torch.Tensor) -> torch.Tensor:
    """Label the 8-connected components of every map of `mask` (bool, `[N, h, w]`, CPU or CUDA).

    Returns an int32 tensor of the same shape and device: 0 on background; two pixels share a label iff
    they lie in the same component. A component's label is `1 + the smallest linear index (y * w + x)` of
    its pixels: not consecutive, but the same on every device. Maps may be up to 64 pixels wide on the CPU
    and up to 4096 pixels on the GPU.
    """
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"connected_components expects a torch.Tensor, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"connected_components expects a bool mask, got dtype {mask.dtype}")
    if mask.dim() != 3:
        raise ValueError(f"connected_components expects a mask of shape [N, h, w], got {tuple(mask.shape)}")
    return _connected_components(mask.contiguous())
