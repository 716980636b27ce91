"""Reading small files defensively (the lowest layer: no package imports).

A label map or config.json is small; a path that holds far more (a link to /dev/zero, a wrong file) is refused
before it is read into memory.
"""

from __future__ import annotations

import codecs
import os

__all__ = ["read_capped", "unique_keys", "decode_text", "check_writable"]


def read_capped(path: str | os.PathLike, max_bytes: int, *, what: str) -> bytes:
    """The bytes of a small file, refusing more than ``max_bytes`` (a link to /dev/zero, a wrong file)."""
    with open(path, "rb") as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"{path}: expected {what} of at most {max_bytes / 2**20:.0f} MiB, found a larger file (or a "
                         "stream); it is not the file it should be: restore or re-download it")
    return data


def unique_keys(source: str):
    """A ``json.loads`` ``object_pairs_hook`` refusing a key given twice in one object: ``json`` keeps the last one
    silently, which turns a label map with a repeated name into a misnumbered one. ``source`` names the file."""

    def hook(pairs: list[tuple[str, object]]) -> dict:
        found: dict = {}
        for key, value in pairs:
            if key in found:
                raise ValueError(f"{source}: the key {key!r} is given more than once (JSON would keep only the last, "
                                 "silently); give each key once")
            found[key] = value
        return found

    return hook


_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))  # UTF-32 LE starts like UTF-16 LE


def decode_text(data: bytes, path: str | os.PathLike, *, what: str) -> str:
    """A text file's bytes as text: UTF-8, or UTF-8/16/32 with a byte-order mark (Excel's "CSV UTF-8" starts with
    one). Anything else is a ValueError naming the line, the encoding it looks like and how to re-save it as
    UTF-8 (Latin-1 and Windows-1252 cannot be told apart from other 8-bit encodings reliably)."""
    encoding = next((name for bom, name in _BOMS if data.startswith(bom)), "utf-8")
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        hint = ("it looks like UTF-16 without a byte-order mark" if data[:200].count(0) > len(data[:200]) // 4
                else "it looks like Latin-1 / Windows-1252")
        raise ValueError(f"{path}: line {line} is not valid {encoding} text (byte {data[error.start]:#04x} at offset "
                         f"{error.start}; {hint}); save {what} as UTF-8 (e.g. 'CSV UTF-8' in a spreadsheet, or "
                         "`iconv -f latin1 -t utf-8`)") from None


def check_writable(folder: str | os.PathLike, flag: str) -> None:
    """Create and remove a file in ``folder`` (made if missing), so an output that cannot be written fails before
    any work; ValueError naming ``flag`` (the option that gave it) and the folder otherwise."""
    try:
        os.makedirs(folder, exist_ok=True)
        probe = os.path.join(folder, f".avex-hub-write-test.{os.getpid()}")
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        os.unlink(probe)
    except OSError as error:
        raise ValueError(f"{flag}: cannot write in {folder} ({error.strerror or error}); choose a folder you can "
                         "write to") from None
