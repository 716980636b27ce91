"""LabelMap: the species head's index <-> scientific name mapping, validated."""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

__all__ = ["LabelMap", "MAX_BYTES", "match_species"]

# The largest label map read: the published ones (~10k scientific names) are under 1 MB; 32 MB leaves room for
# any real taxonomy and stops a wrong file (a link to /dev/zero) before it fills memory.
MAX_BYTES = 32 << 20


class LabelMap(Mapping[str, int]):
    """An immutable ``{scientific name: index}`` map whose indices are exactly ``0 .. len - 1``.

    It reads and writes the published ``label_map.json`` format (``{"Scientific name": index}``),
    and looks names up both ways: ``label_map["Turdus merula"] -> 1``, ``label_map.name(1)``.
    """

    def __init__(self, mapping: Mapping[str, int], *, source: str = "label map") -> None:
        if not isinstance(mapping, Mapping) or not mapping:
            raise ValueError(f"{source}: expected a non-empty {{name: index}} mapping, got {mapping!r:.80}")
        names: list[str | None] = [None] * len(mapping)
        for name, index in mapping.items():
            if not isinstance(name, str) or not name.strip():
                raise ValueError(f"{source}: label names must be non-empty strings, not only spaces; found {name!r} "
                                 f"(index {index!r})")
            if isinstance(index, bool) or not isinstance(index, int):
                raise ValueError(f"{source}: index of {name!r} must be an integer, found {index!r}")
            if not 0 <= index < len(mapping):
                raise ValueError(
                    f"{source}: indices must be 0..{len(mapping) - 1} (one per label); "
                    f"{name!r} has index {index}"
                )
            if names[index] is not None:
                raise ValueError(f"{source}: index {index} is used by both {names[index]!r} and {name!r}")
            names[index] = name
        self._names: tuple[str, ...] = tuple(names)  # type: ignore[arg-type]
        self._index = {name: i for i, name in enumerate(self._names)}

    @classmethod
    def from_names(cls, names: Iterable[str]) -> "LabelMap":
        names = list(names)
        if len(set(names)) != len(names):
            duplicates = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"label names must be unique; repeated: {duplicates}")
        return cls({name: i for i, name in enumerate(names)})

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "LabelMap":
        """Read ``{"name": index}`` JSON, at most ``MAX_BYTES`` of it (a ValueError beyond, and for a name given
        twice: JSON would keep the last one silently)."""
        from ._files import read_capped, unique_keys

        path = Path(path)
        try:
            text = read_capped(path, MAX_BYTES, what="a label map").decode("utf-8")
            data = json.loads(text, object_pairs_hook=unique_keys(str(path)))  # a repeated name is refused
        except FileNotFoundError:
            raise FileNotFoundError(f"label map not found: {path}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{path} is not valid JSON ({error}); expected {{\"name\": index}}") from None
        return cls(data, source=str(path))

    def to_json(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")

    def to_dict(self) -> dict[str, int]:
        return dict(self._index)

    @property
    def names(self) -> tuple[str, ...]:
        """Label names in index order."""
        return self._names

    def name(self, index: int) -> str:
        """The scientific name at ``index``."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"label index {index} out of range for {len(self)} labels")
        return self._names[index]

    def index(self, name: str) -> int:
        """The index of ``name``; a KeyError suggests close names when it is unknown."""
        return self[name]

    def __getitem__(self, name: str) -> int:
        try:
            return self._index[name]
        except KeyError:
            import difflib

            close = difflib.get_close_matches(name, self._names, n=3)
            hint = f"; did you mean {close}?" if close else ""
            raise KeyError(f"{name!r} is not one of the {len(self)} labels{hint}") from None

    def __iter__(self):
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, LabelMap):
            return self._names == other._names
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._names)

    def __repr__(self) -> str:
        preview = ", ".join(self._names[:3]) + (", ..." if len(self) > 3 else "")
        return f"LabelMap({len(self)} labels: {preview})"


def _key(name: str) -> str:
    return " ".join(name.split()).casefold()


def match_species(names: list[str], labels: list[str], *, where: str = "species list",
                  lines: list[int] | None = None) -> list[str]:
    """``names`` as they are written in ``labels`` (same order, duplicates dropped); ValueError naming every name
    that is not a label (with its line in ``lines``), each with its closest matches."""
    by_key = {}
    for label in labels:
        by_key.setdefault(_key(label), label)
    out, unknown = [], []
    for line, name in zip(lines or range(1, len(names) + 1), names):
        label = by_key.get(_key(name))
        if label is None:
            close = difflib.get_close_matches(name, labels, n=3, cutoff=0.6)
            unknown.append(f"line {line}: {name!r}" + (f" (did you mean {' or '.join(map(repr, close))}?)" if close
                                                       else " (no similar label)"))
        elif label not in out:
            out.append(label)
    if unknown:
        raise ValueError(f"{where}: {len(unknown)} name(s) are not labels of these scores: {'; '.join(unknown)}; fix "
                         "the spelling (scientific names as in the label map)")
    if not out:
        raise ValueError(f"{where}: no species names in it; write one scientific name a line")
    return out
