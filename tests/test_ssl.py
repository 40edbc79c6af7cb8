"""The self-supervised pieces against float64 formulas written here: DINO's loss, centring and teacher
temperature, MoCo-v3's contrastive loss, the EMA updates, the per-iteration schedules, and the views."""

import math

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import sar  # noqa: F401  (registers the models)
from harness.ssl import augment, dino, mocov3, schedules

TINY = {"img_size": 32, "patch_size": 8, "embed_dim": 48, "depth": 2, "num_heads": 3, "num_classes": 0}


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def test_dino_loss_and_centre_against_float64():
    rng = np.random.default_rng(0)
    batch, crops, out = 3, 5, 7
    student = rng.normal(size=(crops * batch, out))
    teacher = rng.normal(size=(2 * batch, out))
    centre = rng.normal(size=(1, out)) * 0.1
    student_temp, teacher_temp, momentum = 0.1, 0.05, 0.9
    loss_fn = dino.Loss(out, crops, student_temp, momentum)
    loss_fn.center.copy_(torch.from_numpy(centre).float())
    got = loss_fn(torch.from_numpy(student).float(), torch.from_numpy(teacher).float(), teacher_temp)

    targets = np.exp(_log_softmax((teacher - centre) / teacher_temp))
    logs = _log_softmax(student / student_temp)
    pairs = [
        np.mean(np.sum(-targets[t * batch : (t + 1) * batch] * logs[s * batch : (s + 1) * batch], axis=-1))
        for t in range(2)
        for s in range(crops)
        if s != t
    ]
    assert len(pairs) == 2 * crops - 2
    assert got.item() == pytest.approx(np.mean(pairs), rel=1e-5)
    expected_centre = centre * momentum + teacher.mean(axis=0, keepdims=True) * (1 - momentum)
    np.testing.assert_allclose(loss_fn.center.numpy(), expected_centre, rtol=1e-5, atol=1e-6)


def test_teacher_temperature_warms_up_then_stays():
    temps = schedules.teacher_temperatures(0.04, 0.07, 30, 300)
    assert len(temps) == 300
    assert temps[0] == pytest.approx(0.04) and temps[29] == pytest.approx(0.07)
    assert temps[15] == pytest.approx(0.04 + 0.03 * 15 / 29)
    assert all(t == 0.07 for t in temps[29:])
    np.testing.assert_allclose(schedules.teacher_temperatures(0.04, 0.07, 30, 4), temps[:4])


def test_cosine_schedules_as_dino_and_mocov3_compute_them():
    epochs, steps, warmup = 5, 4, 2
    dino_lr = schedules.cosine(1.0, 0.1, epochs, steps, warmup, warmup_reaches_base=True)
    moco_lr = schedules.cosine(1.0, 0.0, epochs, steps, warmup)
    assert len(dino_lr) == len(moco_lr) == epochs * steps
    n = warmup * steps
    np.testing.assert_allclose(dino_lr[:n], np.linspace(0, 1, n))
    for i in range(epochs * steps):  # MoCo-v3's adjust_learning_rate at the fractional epoch i / steps
        epoch = i / steps
        expected = (
            epoch / warmup
            if epoch < warmup
            else 0.5 * (1 + math.cos(math.pi * (epoch - warmup) / (epochs - warmup)))
        )
        assert moco_lr[i] == pytest.approx(expected)
        if i >= n:  # DINO's utils.cosine_scheduler after its warm-up
            assert dino_lr[i] == pytest.approx(
                0.1 + 0.45 * (1 + math.cos(math.pi * (i - n) / (epochs * steps - n)))
            )
    momentum = schedules.cosine(0.99, 1.0, epochs, steps)  # adjust_moco_momentum
    for i, m in enumerate(momentum):
        assert m == pytest.approx(1 - 0.5 * (1 + math.cos(math.pi * i / steps / epochs)) * (1 - 0.99))


def test_mocov3_loss_against_float64():
    rng = np.random.default_rng(1)
    q, k, tau = rng.normal(size=(6, 5)), rng.normal(size=(6, 5)), 0.2
    got = mocov3.contrastive_loss(torch.from_numpy(q).float(), torch.from_numpy(k).float(), tau)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    kn = k / np.linalg.norm(k, axis=1, keepdims=True)
    logits = qn @ kn.T / tau
    expected = 2 * tau * np.mean(-np.diag(_log_softmax(logits)))
    assert got.item() == pytest.approx(expected, rel=1e-5)


def _tiny_backbone(**kwargs) -> torch.nn.Module:
    return timm.create_model("sar_vit_tiny_patch16_224", last_block="sar", **{**TINY, **kwargs})


def test_ema_teacher_update_is_the_formula():
    torch.manual_seed(0)
    head = dino.Head(48, 16, 32, 8, norm_last_layer=False)
    student = dino.MultiCrop(_tiny_backbone(), head)
    teacher = dino.teacher_of(student, _tiny_backbone())
    assert all(not p.requires_grad for p in teacher.parameters())
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
    before_t = [p.detach().double().clone() for p in teacher.parameters()]
    before_s = [p.detach().double().clone() for p in student.parameters()]
    dino.update_teacher(student, teacher, 0.996)
    for new, t, s in zip(teacher.parameters(), before_t, before_s, strict=True):
        torch.testing.assert_close(new.double(), 0.996 * t + 0.004 * s, rtol=1e-6, atol=1e-6)


def test_moco_momentum_encoder_follows_the_base_encoder_only():
    torch.manual_seed(0)
    backbone = mocov3.prepare_backbone(_tiny_backbone(), stop_grad_conv1=True)
    moco = mocov3.MoCo(backbone, mlp_dim=32, dim=8, temperature=0.2)
    assert not backbone.patch_embed.proj.weight.requires_grad and not backbone.pos_embed.requires_grad
    assert all(not p.requires_grad for p in moco.momentum_parameters())
    with torch.no_grad():
        for p in moco.base_parameters():
            p.add_(1.0)
    before = [p.detach().double().clone() for p in moco.momentum_parameters()]
    base = [p.detach().double().clone() for p in moco.base_parameters()]
    moco.update_momentum_encoder(0.99)
    for new, m, b in zip(moco.momentum_parameters(), before, base, strict=True):
        torch.testing.assert_close(new.double(), 0.99 * m + 0.01 * b, rtol=1e-6, atol=1e-6)
    x = torch.randn(4, 3, 32, 32)
    loss, maps = moco(x, x.flip(-1), 0.99)
    loss.backward()
    assert [tuple(S.shape) for S in maps] == [(4, 3, 4, 4)] * 2
    assert moco.predictor[0].weight.grad is not None and backbone.patch_embed.proj.weight.grad is None


def test_sincos_position_embedding_is_mocov3s():
    pos = mocov3.sincos_position_embedding((3, 3), 8)
    assert pos.shape == (1, 10, 8) and (pos[0, 0] == 0).all()
    omega = 1.0 / 10000 ** (np.arange(2) / 2)
    row, col = 1, 2  # patch 1 * 3 + 2 in raster order
    expected = np.concatenate(
        [np.sin(row * omega), np.cos(row * omega), np.sin(col * omega), np.cos(col * omega)]
    )
    np.testing.assert_allclose(pos[0, 1 + 3 * row + col].numpy(), expected, rtol=1e-6)


def test_multicrop_gives_each_crop_size_its_own_grid_of_S():
    torch.manual_seed(0)
    student = dino.MultiCrop(_tiny_backbone(), dino.Head(48, 16, 32, 8, norm_last_layer=True))
    crops = [torch.randn(2, 3, 32, 32)] * 2 + [torch.randn(2, 3, 16, 16)] * 3
    out, maps = student(crops, similarity_crops=5)
    assert out.shape == (10, 16)
    assert [tuple(S.shape) for S in maps] == [(4, 3, 4, 4), (6, 3, 2, 2)]
    _, only_global = student(crops, similarity_crops=2)
    assert len(only_global) == 1
    norm = student.head.last_layer.parametrizations.weight.original0
    assert not norm.requires_grad and torch.equal(norm, torch.ones_like(norm))


def test_views_have_the_sizes_and_order_of_each_method():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    crops = augment.MultiCrop(64, (0.25, 1.0), 32, (0.05, 0.25), 3, (0.1, 2.0))(image)
    assert [tuple(c.shape) for c in crops] == [(3, 64, 64)] * 2 + [(3, 32, 32)] * 3
    views = augment.TwoViews(64, 0.08, (0.1, 2.0))(image)
    assert [tuple(v.shape) for v in views] == [(3, 64, 64)] * 2
