"""A griffe extension for the API reference (mkdocs.yml): the examples in module docstrings render as Python code.

The package's module docstrings are prose with indented examples, as Python's own documentation writes them::

    avex-hub: ...

        import avex_hub
        model = avex_hub.esp_aves2_sl_beats_all()

Rendered as Markdown, such a block is plain preformatted text at best; and where every line after the summary is
indented (the package's own docstring), the usual docstring cleaning strips that indentation and the example runs
into one paragraph. This extension reads the module's docstring as written (indentation kept) and fences each
indented block as Python, turning a ``::`` that introduces it into ``:``.
"""

from __future__ import annotations

import ast
import textwrap

import griffe

__all__ = ["CodeExamples", "fence_examples"]


def fence_examples(text: str) -> str:
    """``text`` (a module docstring as written, its prose at column 0) with every block indented by 4 or more
    spaces after a blank line fenced as ```` ```python ````; a prose line ending in ``::`` before it ends in ``:``."""
    lines, out, i = text.split("\n"), [], 0
    while i < len(lines):
        line = lines[i]
        starts_block = (line.startswith("    ") and line.strip() and (not out or not out[-1].strip()))
        if not starts_block:
            out.append(line)
            i += 1
            continue
        block = []
        while i < len(lines) and (lines[i].startswith("    ") or not lines[i].strip()):
            block.append(lines[i])
            i += 1
        while block and not block[-1].strip():  # trailing blank lines stay outside the fence
            block.pop()
            i -= 1
        prose = next((k for k in range(len(out) - 1, -1, -1) if out[k].strip()), None)
        if prose is not None and out[prose].rstrip().endswith("::"):
            out[prose] = out[prose].rstrip()[:-1]
        out += ["```python", *textwrap.dedent("\n".join(block)).split("\n"), "```"]
    return "\n".join(out)


class CodeExamples(griffe.Extension):
    """Fence the indented examples of every module docstring as Python code (see the module docstring)."""

    def on_module_instance(self, *, node, mod: griffe.Module, agent, **kwargs) -> None:
        if mod.docstring is None or not isinstance(node, ast.Module):
            return
        raw = ast.get_docstring(node, clean=False)
        if raw:
            mod.docstring.value = fence_examples(raw.strip("\n")).strip()
