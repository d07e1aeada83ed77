"""The read side: stored segments and failures, as records and as output formats.

Every read goes through `tagger.store` with bound parameters.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from tagger.errors import UsageError
from tagger.export import SEGMENT_FIELDS, segment_record, write_csv, write_json
from tagger.store import SegmentQuery, Store, select_failed, select_segments

FORMATS = ("table", "json", "csv", "tsv")


def query_segments(
    db: str,
    labels: Sequence[str] | None,
    min_score: float | None,
    path: str | None,
    min_duration: float | None,
    limit: int | None,
    order: str,
) -> list[dict]:
    """Stored segments matching the filters, as flat records."""
    if order not in SegmentQuery.ORDERS:
        raise UsageError(f"--sort {order!r} is not one of {', '.join(SegmentQuery.ORDERS)}")
    query = SegmentQuery(tuple(labels or ()), min_score, path, min_duration, None, limit, order)
    store = Store(db, create=False)
    try:
        with store.read() as conn:
            return [segment_record(row) for row in select_segments(conn, query)]
    finally:
        store.close()


def failed_videos(db: str) -> list[tuple[str, str]]:
    """(path, reason) of every video whose last scan failed."""
    store = Store(db, create=False)
    try:
        with store.read() as conn:
            return [(row.path, row.error or "") for row in select_failed(conn)]
    finally:
        store.close()


def render_records(console: Console, records: list[dict], output_format: str) -> None:
    """Print records as a Rich table, JSON, CSV or TSV."""
    if output_format not in FORMATS:
        raise UsageError(f"--format {output_format!r} is not one of {', '.join(FORMATS)}")
    if output_format == "json":
        write_json(records, sys.stdout)
    elif output_format in ("csv", "tsv"):
        write_csv(records, sys.stdout, delimiter="," if output_format == "csv" else "\t")
    else:
        table = Table("path", "label", "start", "end", "duration", "score")
        for r in records:
            table.add_row(r["path"], r["label"], r["start_tc"], r["end_tc"], f"{r['duration_s']:.2f}s", f"{r['score']:.2f}")
        console.print(table)
        console.print(f"{len(records)} segments")


def write_records_csv(records: list[dict], output: str) -> int:
    """Write records as CSV to a file, or to standard output for '-'."""
    if output == "-":
        return write_csv(records, sys.stdout, SEGMENT_FIELDS)
    try:
        with open(output, "w", newline="", encoding="utf-8") as handle:
            return write_csv(records, handle, SEGMENT_FIELDS)
    except OSError as exc:
        raise UsageError(f"cannot write {output}: {exc.strerror}; choose another --output") from exc
