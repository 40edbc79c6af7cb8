"""`harness.core.syncbn.GlobalBatchNorm` on 2 gloo processes normalises, back-propagates and updates its
running statistics as one BatchNorm holding both processes' batches (torch's SyncBatchNorm refuses CPU
tensors); `convert` keeps the parameters an optimizer already holds."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from timm.layers import ConvNormAct
from torch import nn

from harness.core import syncbn


def _batch(shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(3)) * 3 + 1


def _reference(norm: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """One process with the whole batch: output, d(loss)/dx, d(loss)/dweight and bias, running stats."""
    x = x.clone().requires_grad_(True)
    out = norm(x)
    (out * torch.arange(out.numel()).view_as(out).sin()).sum().backward()
    return out.detach(), x.grad, norm.weight.grad, norm.bias.grad, norm.running_mean, norm.running_var


def _worker(rank: int, port: int, shape: tuple[int, ...], momentum: float | None, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        norm = syncbn.convert(nn.Sequential(_norm(shape, momentum)), torch.device("cpu"))[0]
        assert isinstance(norm, syncbn.GlobalBatchNorm)
        x = _batch(shape)
        half = len(x) // 2
        share = x[:half] if rank == 0 else x[half:]
        share = share.clone().requires_grad_(True)
        out = norm(share)
        weights = torch.arange(out.numel() * 2).view(2, *out.shape).sin()[rank]  # the whole batch's weights
        (out * weights).sum().backward()
        dist.all_reduce(norm.weight.grad)  # what DDP sums (the reference's loss is the sum, not the mean)
        dist.all_reduce(norm.bias.grad)
        stats = (norm.weight.grad, norm.bias.grad, norm.running_mean, norm.running_var)
        torch.save((out.detach(), share.grad, *stats), f"{out_dir}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def _norm(shape: tuple[int, ...], momentum: float | None) -> nn.Module:
    kind = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d}[len(shape)]
    norm = kind(shape[1], momentum=momentum)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    return norm


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(("shape", "momentum"), [((8, 5), 0.1), ((6, 4, 3, 5), 0.1), ((4, 3, 7), None)])
def test_two_processes_normalise_as_one_batch(shape, momentum, tmp_path):
    torch.manual_seed(0)
    reference = _reference(_norm(shape, momentum), _batch(shape))
    args = (_free_port(), shape, momentum, str(tmp_path))
    mp.start_processes(_worker, args, nprocs=2, start_method="spawn")
    results = {rank: torch.load(tmp_path / f"{rank}.pt", weights_only=True) for rank in (0, 1)}
    out = torch.cat([results[0][0], results[1][0]])
    grad_x = torch.cat([results[0][1], results[1][1]])
    torch.testing.assert_close(out, reference[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad_x, reference[1], rtol=1e-4, atol=1e-5)
    for rank in (0, 1):
        for got, expected in zip(results[rank][2:], reference[2:], strict=True):
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_convert_keeps_the_parameters_and_buffers_it_found():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, affine=False), nn.Sequential(nn.BatchNorm2d(2)))
    before = {name: t for name, t in [*model.named_parameters(), *model.named_buffers()]}
    converted = syncbn.convert(model, torch.device("cpu"))
    assert converted is model
    assert isinstance(model[1], syncbn.GlobalBatchNorm) and isinstance(model[2][0], syncbn.GlobalBatchNorm)
    after = {name: t for name, t in [*model.named_parameters(), *model.named_buffers()]}
    assert after.keys() == before.keys() and all(after[k] is before[k] for k in before)
    assert model[1].weight is None  # affine=False stays without parameters


def test_one_process_is_plain_batchnorm():
    torch.manual_seed(0)
    plain = _norm((6, 4), 0.1)
    global_norm = syncbn.convert(nn.Sequential(_norm((6, 4), 0.1)), torch.device("cpu"))[0]
    global_norm.load_state_dict(plain.state_dict())
    x = _batch((6, 4))
    torch.testing.assert_close(global_norm(x), plain(x), rtol=0, atol=0)


def test_timm_norm_act_layers_keep_their_activation():
    """The FPN head's blocks are timm's ConvNormAct: a BatchNormAct2d whose ReLU a bare conversion drops."""
    block = ConvNormAct(2, 3, 3)
    x = _batch((2, 2, 5, 5))
    expected = block(x)
    syncbn.convert(block, torch.device("cpu"))
    assert isinstance(block.bn, syncbn.GlobalBatchNormAct)
    torch.testing.assert_close(block(x), expected, rtol=0, atol=0)
    assert (block(x) >= 0).all()


def test_a_batchnorm_with_a_forward_of_its_own_is_refused():
    class Scaled(nn.BatchNorm1d):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * super().forward(x)

    with pytest.raises(TypeError, match=r"cannot synchronise 1 \(Scaled\)"):
        syncbn.convert(nn.Sequential(nn.Linear(2, 2), Scaled(2)), torch.device("cpu"))
