"""What issue 22 asks of the package's shape, read from its source: no module over about 450 lines, ``AvexModel``
about 200 lines with its recording methods thin calls, and window audio stacked into batches in one place, the
recording pipeline, which every path that runs recordings through a model uses. Each of these failed on the code
before the pipeline redesign (``AvexModel`` was 350 lines, window audio was stacked in four modules)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import avex_hub

PACKAGE_DIR = Path(avex_hub.__file__).parent
MAX_LINES = 450


# torch.stack over a list comprehension of windows' audio or padding masks
STACKED_WINDOWS = re.compile(r"torch\.stack\(\s*\[\s*\w+\.(audio|padding_mask)\s+for\b")


def sources() -> dict[str, str]:
    return {path.relative_to(PACKAGE_DIR).as_posix(): path.read_text() for path in PACKAGE_DIR.rglob("*.py")}


def test_no_module_is_over_about_450_lines():
    lengths = {name: len(text.splitlines()) for name, text in sources().items()}
    assert {name: n for name, n in lengths.items() if n > MAX_LINES} == {}


def _class(path: Path, name: str) -> ast.ClassDef:
    return next(node for node in ast.parse(path.read_text()).body
                if isinstance(node, ast.ClassDef) and node.name == name)


def test_avex_model_is_the_module_work_with_thin_recording_methods():
    model = _class(PACKAGE_DIR / "encoder" / "model.py", "AvexModel")
    assert model.end_lineno - model.lineno + 1 <= 210
    methods = {node.name: node for node in model.body if isinstance(node, ast.FunctionDef)}
    # predict is a call into encoder.recordings; embed tells a batch tensor from a recording, then calls it too
    for name, most in (("predict", 2), ("embed", 11)):
        code = [node for node in methods[name].body
                if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))]  # the docstring
        lines = code[-1].end_lineno - code[0].lineno + 1
        assert lines <= most, f"AvexModel.{name} holds {lines} lines of code"
        assert "recordings." in ast.unparse(methods[name]), name


def test_window_audio_is_stacked_in_one_place():
    stacking = sorted(name for name, text in sources().items() if STACKED_WINDOWS.search(text))
    assert stacking == ["audio/batches.py"]
