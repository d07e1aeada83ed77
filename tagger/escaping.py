"""File names and messages made safe to show: bytes that are not UTF-8 as \\xNN, and control
characters escaped, so a name can never start a line of its own or forge a field."""

from __future__ import annotations

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
