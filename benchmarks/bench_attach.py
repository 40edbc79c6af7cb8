"""What `sar.attach` costs, per family, on the CPU: the training step (forward + loss + backward) of each
family's small member at 224 px, unmodified (cross-entropy) and with SAR attached (`last_block="sar"`,
`forward_with_similarity`, cross-entropy + 0.01 x spatial entropy), timed round-robin in the same run, and
the memory SAR adds: S itself and the activations kept for the backward pass (the tensors autograd saves,
each storage counted once, parameters left out)."""

import copy
import math
from collections.abc import Callable

import timm
import torch
import torch.nn.functional as F

import sar
from benchmarks.timing import interleaved_median_seconds

LAMBDA = 0.01
MEMBERS = {  # family: (timm model, its arguments); BEiT has no small member, so it is built at ViT-S width
    "ViT-S/16": ("vit_small_patch16_224", {}),
    "DeiT-S/16 distilled": ("deit_small_distilled_patch16_224", {}),
    "DeiT-III-S/16": ("deit3_small_patch16_224", {}),
    "ViT-S/14 + 4 registers": ("vit_small_patch14_reg4_dinov2", {"img_size": 224}),
    "EVA-02-S/14": ("eva02_small_patch14_224", {}),
    "RoPE-ViT-S/16": ("vit_small_patch16_rope_224", {}),
    "BEiT/16 at ViT-S width": ("beit_base_patch16_224", {"embed_dim": 384, "num_heads": 6}),
}
MIB = 2**20
CPU = torch.device("cpu")


def saved_activation_bytes(loss_fn: Callable[[], torch.Tensor], params: set[int]) -> int:
    """Bytes of the tensors autograd keeps for the backward pass of `loss_fn()`, each storage once, the
    parameters' storages (data pointers in `params`) left out."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss_fn()
    return sum(storages.values())


def bench(
    family: str,
    batch: int,
    repeats: int,
    device: torch.device = CPU,
    autocast: torch.dtype | None = None,
) -> dict:
    """One family's step unmodified and with SAR, on `device`, under `autocast` where given (the GPU
    section of `python -m benchmarks gpu` runs it in bf16)."""
    name, kwargs = MEMBERS[family]
    torch.manual_seed(0)
    baseline = timm.create_model(name, num_classes=1000, **kwargs).train().to(device)
    ours = sar.attach(copy.deepcopy(baseline), last_block="sar")
    x = torch.randn(batch, 3, 224, 224, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)
    S_shape = (batch, ours.blocks[-1].attn.num_heads, *ours.similarity_grid_for((224, 224)))

    def cast() -> torch.autocast:
        return torch.autocast(device.type, dtype=autocast, enabled=autocast is not None)

    def baseline_loss() -> torch.Tensor:
        with cast():
            return F.cross_entropy(baseline(x), y)

    def sar_loss() -> torch.Tensor:
        with cast():
            logits, S = ours.forward_with_similarity(x)
            return F.cross_entropy(logits, y) + LAMBDA * sar.spatial_entropy(S)

    def step(model: torch.nn.Module, loss_fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
        def run() -> None:
            model.zero_grad(set_to_none=True)
            loss_fn().backward()

        return run

    seconds = interleaved_median_seconds(
        {"baseline": step(baseline, baseline_loss), "sar": step(ours, sar_loss)}, repeats=repeats, warmup=1
    )
    params = {p.untyped_storage().data_ptr() for p in (*baseline.parameters(), *ours.parameters())}
    return {
        "family": family,
        "model": name,
        "device": device.type,
        "dtype": str(autocast or torch.float32).removeprefix("torch."),
        "batch": batch,
        "baseline_ms": 1e3 * seconds["baseline"],
        "sar_ms": 1e3 * seconds["sar"],
        "sar_time_ratio": seconds["sar"] / seconds["baseline"],
        "S_shape": list(S_shape),
        "S_bytes": 4 * math.prod(S_shape),  # float32 whatever the autocast
        "saved_baseline_bytes": saved_activation_bytes(baseline_loss, params),
        "saved_sar_bytes": saved_activation_bytes(sar_loss, params),
    }


def report(rows: list[dict]) -> None:
    first = rows[0]
    print(
        f"\nsar.attach on the {first['device'].upper()}: training step, batch {first['batch']}, 224 px, "
        f"{first['dtype']} (ms, median)"
    )
    print(f"  {'family':<24}{'unmodified':>11}{'+ SAR':>9}{'ratio':>7}   S, KiB   saved activations, MiB")
    for r in rows:
        extra = r["saved_sar_bytes"] - r["saved_baseline_bytes"]
        print(
            f"  {r['family']:<24}{r['baseline_ms']:>11.0f}{r['sar_ms']:>9.0f}{r['sar_time_ratio']:>7.3f}"
            f"   {r['S_bytes'] / 1024:>6.1f}   {r['saved_baseline_bytes'] / MIB:.1f} -> "
            f"{r['saved_sar_bytes'] / MIB:.1f} ({extra / MIB:+.2f})"
        )


def run(quick: bool = False) -> list[dict]:
    torch.set_grad_enabled(True)
    rows = [bench(family, batch=2 if quick else 8, repeats=2 if quick else 5) for family in MEMBERS]
    report(rows)
    return rows
