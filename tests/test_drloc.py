"""sar.DenseRelativeLoc (DRLoc, Tab. 13) against the loss written out here by hand: the pairs drawn again
from an identically seeded generator, the targets from the formula, the MLP in float64 with the module's
own weights."""

import pytest
import timm
import torch

import sar
from sar.drloc import DenseRelativeLoc


def features(b: int, c: int, h: int, w: int, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(b, c, h, w, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def reference_loss(module: DenseRelativeLoc, x: torch.Tensor, seed: int) -> torch.Tensor:
    """The mean L1 loss, pair by pair, in float64. The draws follow the documented order: rows for
    (p_i, p_j) of every pair, then columns."""
    b, _, h, w = x.shape
    m = module.pairs
    g = torch.Generator().manual_seed(seed)
    rows = torch.randint(h, (b, m, 2), generator=g)
    cols = torch.randint(w, (b, m, 2), generator=g)
    lin = [layer for layer in module.mlp if isinstance(layer, torch.nn.Linear)]
    w1, w2, w3 = (layer.weight.detach().double() for layer in lin)
    b1, b2, b3 = (layer.bias.detach().double() for layer in lin)
    total, count = 0.0, 0
    for n in range(b):
        for s in range(m):
            (ri, rj), (ci, cj) = rows[n, s].tolist(), cols[n, s].tolist()
            e = torch.cat([x[n, :, ri, ci], x[n, :, rj, cj]]).double()
            out = w3 @ torch.relu(w2 @ torch.relu(w1 @ e + b1) + b2) + b3
            for axis, (delta, k) in enumerate(((ri - rj, h), (ci - cj, w))):
                if module.absolute:
                    target = abs(delta) / (k - 1) if module.normalise else abs(delta)
                else:
                    target = (delta + k - 1) / (2 * (k - 1)) if module.normalise else delta + k - 1
                total += abs(out[axis].item() - target)
                count += 1
    return torch.tensor(total / count, dtype=torch.float64)


@pytest.mark.parametrize("absolute", [True, False])
@pytest.mark.parametrize("normalise", [False, True])
@pytest.mark.parametrize("grid", [(5, 5), (3, 6), (7, 2)])
def test_loss_matches_the_formula(absolute, normalise, grid):
    torch.manual_seed(1)
    module = DenseRelativeLoc(8, hidden=16, pairs=12, absolute=absolute, normalise=normalise)
    x = features(3, 8, *grid)
    loss = module(x, generator=torch.Generator().manual_seed(7))
    assert loss.dim() == 0 and loss.dtype == torch.float32
    torch.testing.assert_close(loss.double(), reference_loss(module, x, seed=7), rtol=1e-5, atol=1e-6)


def test_default_head_is_the_official_mlp():
    module = DenseRelativeLoc(384)
    shapes = [tuple(p.shape) for p in module.mlp.parameters()]
    assert shapes == [(512, 768), (512,), (512, 512), (512,), (2, 512), (2,)]
    assert [type(layer).__name__ for layer in module.mlp] == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
    assert (module.pairs, module.mode, module.absolute, module.normalise) == (64, "l1", True, False)


def test_absolute_signed_and_normalised_targets():
    h, w = 4, 9
    p_i = torch.tensor([[[0, 0], [3, 8], [1, 5], [2, 2]]])
    p_j = torch.tensor([[[3, 8], [0, 0], [1, 7], [2, 2]]])
    delta = torch.tensor([[[-3.0, -8.0], [3.0, 8.0], [0.0, -2.0], [0.0, 0.0]]])
    k = torch.tensor([h, w], dtype=torch.float32)

    def targets(absolute, normalise):
        return DenseRelativeLoc(4, absolute=absolute, normalise=normalise).targets(p_i, p_j, (h, w))

    torch.testing.assert_close(targets(True, False), delta.abs())
    torch.testing.assert_close(targets(False, False), delta + (k - 1))
    torch.testing.assert_close(targets(True, True), delta.abs() / (k - 1))
    torch.testing.assert_close(targets(False, True), (delta + (k - 1)) / (2 * (k - 1)))
    # the extremes of each axis reach the ends of the range
    assert targets(True, True).amax().item() == 1.0 and targets(False, True)[0, 0].tolist() == [0.0, 0.0]
    assert targets(False, True)[0, 1].tolist() == [1.0, 1.0]
    assert targets(False, False)[0, 3].tolist() == [h - 1, w - 1]  # Δ = 0 sits in the middle


@pytest.mark.parametrize("grid", [(2, 7), (7, 2), (3, 3)])
def test_pairs_cover_a_non_square_grid_uniformly(grid):
    h, w = grid
    module = DenseRelativeLoc(4, pairs=4000)
    p_i, p_j = module.sample_pairs(2, grid, generator=torch.Generator().manual_seed(0))
    assert p_i.shape == p_j.shape == (2, 4000, 2) and p_i.dtype == torch.int64
    for p in (p_i, p_j):
        cells = (p[..., 0] * w + p[..., 1]).flatten()
        counts = torch.bincount(cells, minlength=h * w)
        assert counts.numel() == h * w  # nothing outside the grid
        expected = cells.numel() / (h * w)
        assert (counts - expected).abs().max().item() < 0.2 * expected
    assert (p_i != p_j).any(dim=-1).float().mean().item() > 0.5  # p_i and p_j drawn independently


def test_gradients_reach_the_mlp_and_only_the_sampled_tokens():
    module = DenseRelativeLoc(6, hidden=16, pairs=5)
    x = features(2, 6, 4, 5).requires_grad_()
    module(x, generator=torch.Generator().manual_seed(3)).backward()
    for name, p in module.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    p_i, p_j = module.sample_pairs(2, (4, 5), generator=torch.Generator().manual_seed(3))
    sampled = torch.zeros(2, 4, 5, dtype=torch.bool)
    for n in range(2):
        for p in (p_i[n], p_j[n]):
            sampled[n, p[:, 0], p[:, 1]] = True
    touched = x.grad.abs().sum(dim=1) > 0
    assert touched.any() and torch.equal(touched & ~sampled, torch.zeros_like(sampled))


def test_float64_gradients():
    module = DenseRelativeLoc(3, hidden=8, pairs=4).double()
    x = features(2, 3, 3, 4, dtype=torch.float64).requires_grad_()
    assert module(x, generator=torch.Generator().manual_seed(0)).dtype == torch.float64
    assert torch.autograd.gradcheck(lambda t: module(t, generator=torch.Generator().manual_seed(0)), (x,))


def test_float32_under_autocast():
    module = DenseRelativeLoc(8, hidden=16, pairs=10)
    x = features(2, 8, 4, 4).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = module(x, generator=torch.Generator().manual_seed(0))
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, module(x.float(), generator=torch.Generator().manual_seed(0)))


def test_parameters_belong_to_the_model_and_train_with_it():
    model = timm.create_model(
        "sar_vit_tiny_patch16_224",
        num_classes=3,
        img_size=32,
        patch_size=8,
        embed_dim=16,
        depth=1,
        num_heads=2,
    )
    model.drloc = sar.DenseRelativeLoc(model.embed_dim, hidden=8, pairs=6)  # as sar.drloc's usage says
    names = {name for name, _ in model.named_parameters()}
    assert {"drloc.mlp.0.weight", "drloc.mlp.4.bias"} <= names
    ids = {id(p) for p in model.parameters()}
    assert all(id(p) in ids for p in model.drloc.parameters())

    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    tokens = model.forward_features(images)
    grid = model.patch_grid(tokens, model.feature_grid_for(images.shape[-2:]))
    assert grid.shape == (2, 16, 4, 4)
    torch.testing.assert_close(grid[:, :, 1, 2], tokens[:, 1 + 1 * 4 + 2])  # raster order after [CLS]
    loss = model.drloc(grid, generator=torch.Generator().manual_seed(0))
    before = model.drloc.mlp[0].weight.detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss.backward()
    assert model.patch_embed.proj.weight.grad.abs().sum() > 0
    optimizer.step()
    assert not torch.equal(before, model.drloc.mlp[0].weight)

    # another input size: the grid follows the input
    wide = model.forward_features(torch.randn(1, 3, 16, 40))
    assert model.patch_grid(wide, model.feature_grid_for((16, 40))).shape == (1, 16, 2, 5)


def test_determinism_and_the_rng_it_draws_from():
    module = DenseRelativeLoc(4, hidden=8, pairs=16)
    x = features(2, 4, 5, 5)
    state = torch.random.get_rng_state()
    a = module(x, generator=torch.Generator().manual_seed(5))
    assert torch.equal(torch.random.get_rng_state(), state)  # a generator leaves the global RNG alone
    assert torch.equal(a, module(x, generator=torch.Generator().manual_seed(5)))
    assert not torch.equal(a, module(x, generator=torch.Generator().manual_seed(6)))
    torch.manual_seed(11)
    b = module(x)
    assert not torch.equal(torch.random.get_rng_state(), state)
    torch.manual_seed(11)
    assert torch.equal(b, module(x))
    assert torch.equal(b, module(x, generator=torch.Generator().manual_seed(11)))  # same draws, same order


@pytest.mark.parametrize(
    ("x", "error", "match"),
    [
        (torch.zeros(2, 16, 4), ValueError, r"\[B, C, h, w\].*\(2, 16, 4\)"),
        (torch.zeros(2, 4, 3, 3, dtype=torch.int64), TypeError, "floating-point.*int64"),
        (torch.zeros(2, 5, 3, 3), ValueError, "C=4.*C=5"),
        (torch.zeros(2, 4, 1, 6), ValueError, "at least 2x2.*1x6"),
        (torch.zeros(2, 4, 6, 1), ValueError, "at least 2x2.*6x1"),
        (torch.zeros(0, 4, 3, 3), ValueError, "at least one image"),
        ([[0.0]], TypeError, "torch.Tensor.*list"),
    ],
)
def test_bad_features(x, error, match):
    with pytest.raises(error, match=match):
        DenseRelativeLoc(4)(x)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"mode.*'ce'"):
        DenseRelativeLoc(4, mode="ce")
    with pytest.raises(ValueError, match=r"mode.*'L1'"):
        DenseRelativeLoc(4, mode="L1")
    for kwargs in ({"pairs": 0}, {"dim": -1}, {"hidden": 2.5}, {"pairs": True}):
        with pytest.raises(ValueError, match=f"{next(iter(kwargs))} must be a positive int"):
            DenseRelativeLoc(**{"dim": 4, **kwargs})
    with pytest.raises(TypeError, match="absolute must be a bool"):
        DenseRelativeLoc(4, absolute="yes")
    with pytest.raises(TypeError, match=r"generator must be a torch\.Generator.*int"):
        DenseRelativeLoc(4)(torch.zeros(1, 4, 3, 3), generator=0)
