"""`protocol.amp`: bf16 autocast, fp16 autocast with a GradScaler (each method's own code runs fp16 or
float32, see `recipes/protocol/`), or off.
On the CPU training runs in float32 whatever the mode: autocast there is slower than it saves. The SAR
loss is float32 in every mode (`sar.spatial_entropy` leaves autocast itself)."""

import contextlib

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class Precision:
    def __init__(self, mode: str, device: torch.device) -> None:
        self.device = device
        self.dtype = DTYPES.get(mode) if device.type == "cuda" else None
        self.scaler = torch.amp.GradScaler("cuda") if self.dtype is torch.float16 else None

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def state_dict(self) -> dict:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
