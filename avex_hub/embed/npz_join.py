"""NPZ outputs joined column by column, for ``avex-hub merge`` (:mod:`avex_hub.embed.merge`).

An .npz is a zip of .npy members; the merged member is written as a header with the total shape, then each
output's rows of that column in turn, read a part at a time (about ``PART_BYTES``; never whole columns). The arrays
are those ``np.concatenate`` gives, in the members' order ``outputs.write_npz`` uses.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np

from .destinations import writing
from .settings import InferenceSettings

__all__ = ["PART_BYTES", "npy_members", "npy_parts", "write_joined"]

PART_BYTES = 1 << 20  # how much of an NPZ column the merge holds at a time


def _npy_header(handle) -> tuple[tuple[int, ...], bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` from the start of an .npy member; its data follows."""
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(handle)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(handle)
    raise ValueError(f"an .npy member of format version {version[0]}.{version[1]}; avex-hub writes 1.0 or 2.0")


def npy_members(local: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Each array of an .npz (the names ``np.load`` gives, in order): its shape and dtype, from its header."""
    members = {}
    with zipfile.ZipFile(local) as archive:
        for info in archive.infolist():
            with archive.open(info) as handle:
                shape, _, dtype = _npy_header(handle)
            members[info.filename.removesuffix(".npy")] = (shape, dtype)
    return members


def npy_parts(local: Path, name: str) -> Iterator[np.ndarray]:
    """The rows of array ``name`` of the .npz ``local``, in order, about ``PART_BYTES`` at a time."""
    with zipfile.ZipFile(local) as archive, archive.open(name + ".npy") as handle:
        shape, fortran, dtype = _npy_header(handle)
        row = dtype.itemsize * math.prod(shape[1:])
        if fortran or dtype.hasobject or not shape or not row:  # not what avex-hub writes: read whole
            with np.load(local, allow_pickle=False) as data:
                yield np.ascontiguousarray(data[name])
            return
        step = max(1, PART_BYTES // row)
        for start in range(0, shape[0], step):
            count = min(step, shape[0] - start)
            data = handle.read(count * row)
            if len(data) != count * row:
                raise ValueError(f"{local}: array {name} ends after {start * row + len(data)} of "
                                 f"{shape[0] * row} bytes; the output is cut short: make it again")
            yield np.frombuffer(data, dtype).reshape(count, *shape[1:])


def write_joined(locals_: list[Path], out: str, settings: dict) -> int:
    """The NPZ outputs ``locals_`` joined into ``out``: the arrays ``np.concatenate`` would give (every column,
    --times' too) and the first output's settings, in the members' order of ``outputs.write_npz``."""
    members = [npy_members(local) for local in locals_]
    names = ["file", "settings", *(n for n in members[0] if n not in ("file", "settings"))]
    with writing(out, ".npz") as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name in names:
            with archive.open(name + ".npy", "w", force_zip64=True) as handle:
                if name == "settings":
                    settings_json = np.array(InferenceSettings.from_dict(settings).to_json())
                    np.lib.format.write_array(handle, settings_json, allow_pickle=False)
                    continue
                shape, dtype = _joined_shape(name, [m[name] for m in members])
                header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
                try:
                    np.lib.format.write_array_header_1_0(handle, header)
                except ValueError:  # a header over 64 KiB (write_array's own choice of version)
                    np.lib.format.write_array_header_2_0(handle, header)
                for local in locals_:
                    for part in npy_parts(local, name):
                        handle.write(part.astype(dtype, copy=False).tobytes())
    return sum(m["start_s"][0][0] for m in members)


def _joined_shape(name: str, found: list[tuple[tuple[int, ...], np.dtype]]) -> tuple[tuple[int, ...], np.dtype]:
    """The shape and dtype of the outputs' arrays ``name`` joined along their rows (``np.concatenate``'s)."""
    rest = {shape[1:] for shape, _ in found}
    if any(not shape for shape, _ in found) or len(rest) > 1:
        raise ValueError(f"the outputs' arrays {name} cannot be joined row by row (shapes "
                         f"{', '.join(sorted({str(s) for s, _ in found}))}); merge only outputs of avex-hub embed "
                         "made with one model and one set of settings")
    return (sum(shape[0] for shape, _ in found), *rest.pop()), np.result_type(*(dtype for _, dtype in found))
