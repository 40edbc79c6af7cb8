"""Training-step throughput (forward + loss + backward) of ViT-S/16: the baseline (standard last block,
cross-entropy only), ViT-S/16 + SAR (fused attention, S from the [CLS] row, the fused loss) and the
reference approach (attention materialised in every block, S cut from the full logits, the per-blob
loss), all in the same run. CPU: batch 64 in float32; GPU: batch 256 under bf16 autocast."""

from collections.abc import Callable

import timm
import torch
import torch.nn.functional as F

import sar
from benchmarks.reference_loss import reference_spatial_entropy
from benchmarks.reference_vit import materialise_attention, reference_forward
from benchmarks.timing import interleaved_median_seconds

LAMBDA = 0.01


def _steps(device: str, dtype: torch.dtype | None) -> dict[str, tuple[torch.nn.Module, Callable]]:
    def model(last_block: str) -> torch.nn.Module:
        torch.manual_seed(0)
        return timm.create_model("sar_vit_small_patch16_224", last_block=last_block).to(device).train()

    baseline, ours, reference = model("standard"), model("sar"), model("sar")
    materialise_attention(reference)
    autocast = torch.autocast(device, dtype=dtype, enabled=dtype is not None)

    def baseline_loss(x, y):
        with autocast:
            return F.cross_entropy(baseline(x), y)

    def sar_loss(x, y):
        with autocast:
            logits, S = ours.forward_with_similarity(x)
            return F.cross_entropy(logits, y) + LAMBDA * sar.spatial_entropy(S)

    def reference_loss(x, y):
        with autocast:
            logits, S = reference_forward(reference, x)
            return F.cross_entropy(logits, y) + LAMBDA * reference_spatial_entropy(S)

    return {
        "baseline": (baseline, baseline_loss),
        "sar": (ours, sar_loss),
        "reference": (reference, reference_loss),
    }


def bench(device: str, batch: int, dtype: torch.dtype | None, repeats: int) -> dict:
    x = torch.randn(batch, 3, 224, 224, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)
    steps = _steps(device, dtype)
    with torch.no_grad():
        ours, ref = steps["sar"][1](x, y).item(), steps["reference"][1](x, y).item()
    if abs(ours - ref) > 1e-2 * abs(ref):
        raise AssertionError(f"SAR and the reference approach compute different losses: {ours} vs {ref}")

    def step(model: torch.nn.Module, loss_fn: Callable) -> Callable[[], None]:
        def run() -> None:
            model.zero_grad(set_to_none=True)
            loss_fn(x, y).backward()

        return run

    seconds = interleaved_median_seconds(
        {name: step(*pair) for name, pair in steps.items()},
        repeats=repeats,
        warmup=2 if device == "cpu" else 10,
    )
    row: dict = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "batch": batch}
    row["dtype"] = str(dtype or torch.float32).removeprefix("torch.")
    row.update({f"{name}_images_per_s": batch / t for name, t in seconds.items()})
    row["sar_overhead_pct"] = 100 * (row["baseline_images_per_s"] / row["sar_images_per_s"] - 1)
    row["sar_speedup_vs_reference"] = row["sar_images_per_s"] / row["reference_images_per_s"]
    return row


def report(rows: list[dict]) -> None:
    print("\nViT-S/16 training step (forward + loss + backward), images/s")
    for r in rows:
        print(
            f"  {r['device']} batch {r['batch']} {r['dtype']}: baseline {r['baseline_images_per_s']:.1f}"
            f" | + SAR {r['sar_images_per_s']:.1f} (overhead {r['sar_overhead_pct']:+.1f}%)"
            f" | reference approach {r['reference_images_per_s']:.1f}"
            f" (SAR is {r['sar_speedup_vs_reference']:.2f}x faster)"
        )
    for r in rows:
        if r["device"] != "cpu":
            met = "met" if r["sar_overhead_pct"] <= 3 else "MISSED"
            print(f"  target on the GPU: SAR overhead <= 3%: {r['sar_overhead_pct']:+.1f}% [{met}]")


def run(quick: bool = False) -> list[dict]:
    torch.set_grad_enabled(True)
    rows = [bench("cpu", batch=8 if quick else 64, dtype=None, repeats=2 if quick else 5)]
    if torch.cuda.is_available():
        rows.append(bench("cuda", batch=256, dtype=torch.bfloat16, repeats=20))
    report(rows)
    return rows
