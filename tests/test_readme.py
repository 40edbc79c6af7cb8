"""The README's training-loop example runs as written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.slow
def test_readme_examples_run_in_order():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) == 2, "the README's Python examples changed: update this test"
    namespace: dict = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)  # the loss on a plain timm ViT
    assert namespace["S"].shape == (8, 3, 8, 8)
    assert all(p.grad is not None for p in namespace["model"].blocks[-1].attn.qkv.parameters())
    exec(compile(blocks[1], str(README), "exec"), namespace)  # a SAR-ready model
    assert namespace["S"].shape == (8, 6, 8, 8)
    assert namespace["model"].last_block == "sar"
    assert all(p.grad is not None for p in namespace["model"].parameters())
