"""The public reference implementation's approach to the spatial entropy, re-written as the baseline.

Per map, on the host: OpenCV's connectedComponents in a Python loop, then one dense mask tensor per blob;
Eq. 8 as the product of B with the stacked masks. This is what `sar.spatial_entropy` replaces.
"""

import cv2
import numpy as np
import torch


def reference_components(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(batch index, head index, dense [blobs, k*k] mask) for every blob of a [B, H, k*k] bool mask."""
    bs, heads, n = mask.shape
    k = round(n**0.5)
    host = mask.cpu().numpy().astype(np.uint8)
    batch_idx, head_idx, blobs = [], [], []
    for b in range(bs):
        for h in range(heads):
            count, labels = cv2.connectedComponents(
                host[b, h].reshape(k, k), connectivity=8, ltype=cv2.CV_16U
            )
            for blob in range(1, count):
                batch_idx.append(b)
                head_idx.append(h)
                blobs.append(torch.tensor((labels == blob) * 1.0).reshape(-1).long())
    device = mask.device
    return (
        torch.tensor(batch_idx, device=device),
        torch.tensor(head_idx, device=device),
        torch.stack(blobs).to(device),
    )


def reference_spatial_entropy(S: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """Mean spatial entropy of S [B, H, k, k], computed the reference way (dense mask per blob)."""
    bs, heads = S.shape[:2]
    x = S.float().flatten(2)
    m = x.mean(dim=-1, keepdim=True)
    with torch.no_grad():
        fg = x > m
        b_id, h_id, blob_masks = reference_components(fg)
    mass = torch.relu(x - m) + eps
    p = (mass[b_id, h_id] * blob_masks).sum(dim=-1) / mass.sum(dim=-1)[b_id, h_id]
    return -(p * torch.log(p)).sum() / (bs * heads)
