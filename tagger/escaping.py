"""File names and messages made safe to show: bytes that are not UTF-8 as \\xNN, and control
characters escaped, so a name can never start a line of its own or forge a field; paths
shortened to fit a width without ever wrapping; counts with their noun ("1 row", "2 rows")."""

from __future__ import annotations

import os
import unicodedata


def _escape_char(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8, kept by Python as a surrogate escape
        return f"\\x{code - 0xDC00:02x}"
    return {"\n": "\\n", "\t": "\\t", "\r": "\\r"}.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def undecodable_escaped(text: str) -> str:
    """`text` with the bytes of a file name that are not UTF-8 written as \\xNN (files hold UTF-8)."""
    if text.isprintable() or not any(0xDC80 <= ord(c) <= 0xDCFF for c in text):
        return text
    return "".join(_escape_char(c) if 0xDC80 <= ord(c) <= 0xDCFF else c for c in text)


def printable(text: str) -> str:
    """`text` as one line of terminal output: undecodable bytes as \\xNN, and control characters,
    line and paragraph separators as \\n, \\t, \\r, \\xNN or \\uNNNN, so a file name can never
    start a line of its own or forge a field."""
    if text.isprintable():
        return text
    return "".join(_escape_char(c) if unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") else c for c in text)


def shortened_path(path: str, width: int) -> str:
    """`path` in at most `width` characters: as it is when it fits; else the file name whole with
    as much of its folder as fits, from the end ("…/clips/pianist.avi"); else the file name alone,
    shortened in the middle ("vta-ldm__0DC…_000030.mp4"), keeping its start and its extension."""
    if len(path) <= width:
        return path
    folder, name = os.path.split(path)
    keep = width - len(name) - 2  # room for "…" and the separator
    if keep > 0:
        return f"…{folder[-keep:]}/{name}"
    if len(name) <= width:
        return name
    tail = (width - 1) // 2
    return f"{name[:width - 1 - tail]}…{name[-tail:]}" if tail > 0 else name[:width]


def counted(number: int, thing: str) -> str:
    """"1 row", "2 rows": a count as people write it (`thing` takes an "s" in the plural)."""
    return f"{number} {thing}{'' if number == 1 else 's'}"
