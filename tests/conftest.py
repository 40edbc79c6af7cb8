"""Without a GPU, Triton kernels run under its interpreter on CPU tensors (set before any kernel is built)."""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
