"""The README's promises: its Python example runs, and its test command is what CI runs."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README.md has no python example"
    for block in blocks:
        # The ONNX and PyTorch examples need onnxruntime and torch, which the sanitizer
        # environment leaves out.
        if any(
            f"import {module}" in block and importlib.util.find_spec(module) is None
            for module in ("onnxruntime", "torch")
        ):
            continue
        script = tmp_path / "example.py"
        script.write_text(block)
        out = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path
        )
        assert out.returncode == 0, out.stderr
        # Where the example states its output in a trailing comment, it must be what it prints.
        for line in block.splitlines():
            m = re.match(r"print\(.*\)\s+# (.+)$", line)
            if m:
                assert m.group(1).strip() in out.stdout


def test_readme_shows_install_and_test_commands():
    text = README.read_text()
    assert "pip install ." in text
    assert re.search(r"^python -m pytest", text, flags=re.M)
