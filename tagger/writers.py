"""Writing records to files: CSV and JSON, and `tagger export`'s choice among every format.

CSV follows RFC 4180 through Python's csv module (commas, quotes, newlines and non-ASCII round-trip),
and a cell a spreadsheet would run as a formula gets a leading apostrophe, so it opens inert.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from tagger.errors import UsageError
from tagger.escaping import counted
from tagger.records import SEGMENT_FIELDS
from tagger.sidecars import SIDECAR_FORMATS, opentimelineio, output_folder, write_sidecars

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
EXPORT_FORMATS = ("csv", "json", *SIDECAR_FORMATS)


def inert_cell(value):
    """A text cell that would start a spreadsheet formula, prefixed with an apostrophe."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def write_csv(records: Iterable[dict], out: TextIO, fields=SEGMENT_FIELDS, delimiter: str = ",") -> int:
    """Write `records` as CSV (or TSV) with a header; returns the number of rows."""
    writer = csv.DictWriter(out, fieldnames=list(fields), delimiter=delimiter, lineterminator="\r\n")
    writer.writeheader()
    count = 0
    for record in records:
        writer.writerow({key: inert_cell(record.get(key)) for key in fields})
        count += 1
    return count


def write_csv_file(records: Iterable[dict], output: str, fields) -> int:
    """Write CSV to the file `output`, or to standard output for '-'; returns the number of rows."""
    return _write_whole(output, lambda handle: write_csv(records, handle, fields), newline="")


def write_json(records: Iterable[dict], out: TextIO) -> int:
    """Write `records` as one JSON array; returns the number of rows."""
    items = list(records)
    json.dump(items, out, ensure_ascii=False, indent=1)
    out.write("\n")
    return len(items)


def write_json_file(records: Iterable[dict], output: str) -> int:
    """Write a JSON array to the file `output`, or to standard output for '-'; returns the number of rows."""
    return _write_whole(output, lambda handle: write_json(records, handle))


def _write_whole(output: str, write: Callable[[TextIO], int], newline: str | None = None) -> int:
    """Run `write` on standard output for '-', else on `output`.partial, renamed to `output` once
    complete: the old file stays whole until the new one is. Returns what `write` returns."""
    if output == "-":
        return write(sys.stdout)
    partial = f"{output}.partial"
    try:
        with open(partial, "w", newline=newline, encoding="utf-8") as handle:
            count = write(handle)
        os.replace(partial, output)
        return count
    except OSError as exc:
        raise UsageError(f"cannot write {output}: {exc.strerror}; choose another --output") from exc
    finally:
        if os.path.exists(partial):
            os.remove(partial)


@dataclass(frozen=True)
class ExportTarget:
    """Where `tagger export` writes: a file (or '-') for csv/json, a folder or each video's folder otherwise."""

    fmt: str
    output: str | None
    folder: Path | None = None  # sidecar formats: None = beside each video

    @classmethod
    def check(cls, fmt: str, output: str | None, sidecar: bool) -> ExportTarget:
        """Validate the format and destination before anything is read.

        Raises:
            UsageError: unknown format, a destination the format cannot use, or otio not installed.
        """
        if fmt not in EXPORT_FORMATS:
            raise UsageError(f"--format {fmt!r} is not one of {', '.join(EXPORT_FORMATS)}")
        if fmt in ("csv", "json"):
            if sidecar:
                raise UsageError(f"--sidecar is for {', '.join(SIDECAR_FORMATS)}; --format {fmt} writes one file: pass -o FILE")
            return cls(fmt, output or "-")
        if fmt == "otio":
            opentimelineio()
        return cls(fmt, output, output_folder(output, fmt, sidecar))

    def write(self, records: Iterable[dict]) -> str:
        """Write `records`; returns what was written, for the user (empty for standard output)."""
        if self.fmt == "csv":
            count = write_csv_file(records, self.output, SEGMENT_FIELDS)
        elif self.fmt == "json":
            count = write_json_file(records, self.output)
        else:
            files, segments = write_sidecars(records, self.fmt, self.folder)
            where = "beside the videos" if self.folder is None else f"to {self.output}"
            return f"wrote {counted(files, f'.{self.fmt} file')} ({counted(segments, 'segment')}) {where}"
        return "" if self.output == "-" else f"wrote {counted(count, 'row')} to {self.output}"
