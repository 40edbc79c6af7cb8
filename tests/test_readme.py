"""The README's training-loop example runs as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_training_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README lost its Python example"
    namespace: dict = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)
    assert namespace["S"].shape == (8, 3, 8, 8)
    assert namespace["loss"].requires_grad
    assert all(p.grad is not None for p in namespace["model"].blocks[-1].attn.qkv.parameters())
