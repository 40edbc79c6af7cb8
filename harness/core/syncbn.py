"""BatchNorm over the global batch of a multi-process run, on any device.

torch's `nn.SyncBatchNorm` refuses CPU tensors, so a gloo run (CPU, CI, this project's tests) could not
use the synchronised statistics that the official codes train with (MoCo-v3's `main_moco.py` converts
the whole model; mmseg's Semantic FPN head uses `SyncBN`). On a GPU the conversion is timm's (torch's
SyncBatchNorm, keeping timm's norm-activation layers whole); on the CPU `GlobalBatchNorm` computes the
same statistics with two differentiable all-reduces (the mean, then the centred second moment), so that a
batch split over W processes normalises as it would in one."""

import torch
import torch.distributed as dist
from timm.layers import convert_sync_batchnorm
from timm.layers.norm_act import BatchNormAct2d
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


class _Sum(torch.autograd.Function):
    """The sum over the processes, differentiable: every process's loss depends on every process's
    input through the statistics, so the gradient is the sum of the processes' gradients."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class GlobalBatchNorm(_BatchNorm):
    """A BatchNorm of any dimension whose training statistics are those of every process's batch
    together: the mean and the biased variance normalise, the unbiased variance of the global batch
    updates the running estimate, as one process holding the whole batch would."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least a 2-D input [N, C, ...], got {input.dim()}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        synchronised = self.training and dist.is_initialized() and dist.get_world_size() > 1
        if not synchronised:
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = torch.tensor([x.numel() / x.shape[1]], dtype=torch.float64, device=x.device)
        dist.all_reduce(count)
        total = float(count)
        if total < 2:
            raise ValueError(
                f"BatchNorm needs more than one value per channel over the processes, got {total}"
            )
        mean = _Sum.apply(x.sum(dims, dtype=torch.float32)) / total
        centred = x - mean.view(shape).to(x.dtype)
        var = _Sum.apply(centred.float().pow(2).sum(dims)) / total
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach() * total / (total - 1))
        out = centred * torch.rsqrt(var + self.eps).view(shape).to(x.dtype)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, unbiased_var: torch.Tensor) -> None:
        """`F.batch_norm`'s update: an exponential average with `momentum`, or the cumulative average of
        every batch so far where momentum is None."""
        self.num_batches_tracked.add_(1)
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
        self.running_var.lerp_(unbiased_var.to(self.running_var.dtype), factor)


class GlobalBatchNormAct(GlobalBatchNorm):
    """timm's `BatchNormAct2d` (a BatchNorm, then its dropout and activation, as timm's `ConvNormAct` builds
    the FPN head's blocks) over the global batch: `convert` sets `drop` and `act` to the original's."""

    drop: nn.Module
    act: nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(super().forward(x)))


PLAIN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, BatchNormAct2d)


def convert(module: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm of `module` synchronised across the processes: timm's `convert_sync_batchnorm` on a
    GPU (torch's would turn a `BatchNormAct2d` into a bare `SyncBatchNorm`, dropping its activation),
    `GlobalBatchNorm` elsewhere. Children are replaced in place, keeping their parameters and buffers (so
    an optimizer built before still holds them); a BatchNorm given as `module` itself is returned new. A
    BatchNorm subclass with a forward of its own is refused, since either conversion would drop it."""
    for name, child in module.named_modules():
        known = type(child) in PLAIN or isinstance(child, GlobalBatchNorm)
        if isinstance(child, _BatchNorm) and not known:
            raise TypeError(
                f"cannot synchronise {name or 'the module'} ({type(child).__name__}): only "
                f"{', '.join(kind.__name__ for kind in PLAIN)} convert without losing what their forward adds"
            )
    if device.type == "cuda":
        return convert_sync_batchnorm(module)
    return _to_global(module)


def _to_global(module: nn.Module) -> nn.Module:
    if type(module) in PLAIN:
        kind = GlobalBatchNormAct if isinstance(module, BatchNormAct2d) else GlobalBatchNorm
        converted = kind(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        if isinstance(module, BatchNormAct2d):
            converted.drop, converted.act = module.drop, module.act
        if module.affine:
            converted.weight, converted.bias = module.weight, module.bias
        if module.track_running_stats:
            converted.running_mean, converted.running_var = module.running_mean, module.running_var
            converted.num_batches_tracked = module.num_batches_tracked
        converted.train(module.training)
        return converted
    for name, child in module.named_children():
        module.add_module(name, _to_global(child))
    return module
