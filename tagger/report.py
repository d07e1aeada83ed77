"""The static HTML report: one self-contained page over the store, and a folder of thumbnails.

The page (`report_page.html`) embeds the tags as JSON in a `<script type="application/json">`
element and draws summary, timelines and filters with a small inline script: no server, no CDN,
nothing fetched, so it opens offline from any copy of the folder. Text from the store (file names,
labels, failure reasons) reaches the page only through that JSON and the script's `textContent`,
never as markup. Thumbnails are the middle frames of each video's best-scoring segments, decoded
by the scan's own frame sources, at most `thumbnails` per video so a 10,000-video store stays
practical.
"""

from __future__ import annotations

import html
import json
import os
import time
from collections import defaultdict
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from tagger.errors import UsageError
from tagger.records import reading
from tagger.selects import SOURCES, SegmentQuery, select_segments, select_videos
from tagger.thumbnails import ThumbnailRequest, write_thumbnails

PAGE_TEMPLATE = "report_page.html"
DATA_MARK = "__TAGGER_REPORT_DATA__"
TITLE_MARK = "__TAGGER_REPORT_TITLE__"
THUMBS_FOLDER = "thumbs"


@dataclass(frozen=True)
class ReportSettings:
    """What `tagger report` writes and how much decoding it may spend on thumbnails."""

    output: Path  # a folder: index.html and thumbs/
    thumbnails: int = 3  # per video at most: 10,000 videos make at most 30,000 small JPEGs


@dataclass(frozen=True)
class ReportSummary:
    """What was written."""

    page: Path
    videos: int  # every stored video, the failed ones included
    failed: int
    segments: int
    thumbnails: int
    seconds: float


def report_folder(output: str) -> Path:
    """The report's folder, created when missing.

    Raises:
        UsageError: `output` is a file, or the folder cannot be created.
    """
    folder = Path(output).expanduser()
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{output} is a file; the report is a folder (index.html and thumbs/): pass -o DIR")
    try:
        (folder / THUMBS_FOLDER).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create folder {output}: {exc.strerror}; pass another -o DIR") from exc
    return folder


def write_report(db: str, settings: ReportSettings) -> ReportSummary:
    """Read the whole store in one snapshot, take thumbnails, write `index.html`; returns what was written.

    Raises:
        DatabaseError: no usable database at `db`.
        UsageError: the output folder cannot be written.
    """
    began = time.perf_counter()
    folder = report_folder(str(settings.output))
    with reading(db) as conn:
        stored = select_videos(conn)
        rows = select_segments(conn, SegmentQuery())
    data, requests = report_data(stored, rows, settings.thumbnails, folder / THUMBS_FOLDER)
    for old in (folder / THUMBS_FOLDER).glob("*.jpg"):  # a previous report's thumbnails
        old.unlink()
    taken = 0
    for request, video in requests:
        written = write_thumbnails(request)
        taken += written
        if not written:  # the video cannot be decoded now: its segments show no thumbnail
            for segment in video["segments"]:
                segment[5] = None
    page = folder / "index.html"
    videos = data["summary"]["videos"]  # tagged and failed: the one count, as the page shows it
    _write_atomically(page, page_html(data, f"tagger report: {videos} videos"))
    return ReportSummary(page, videos, len(data["failures"]), len(rows), taken, time.perf_counter() - began)


def report_data(stored, rows, thumbnails: int, thumbs: Path) -> tuple[dict, list[tuple[ThumbnailRequest, dict]]]:
    """The page's data, and the thumbnails to take for it.

    `stored` are `select_videos` rows, `rows` `select_segments` rows (path order). A segment is
    `[label index, start, end, score, evidence index, thumbnail or null]`; evidence indexes
    `tagger.selects.SOURCES` (video: seen, audio: heard, both).
    """
    labels = sorted({row.label for row in rows})
    label_index = {label: i for i, label in enumerate(labels)}
    by_path = defaultdict(list)
    for row in rows:
        by_path[row.path].append([label_index[row.label], round(row.start, 3), round(row.end, 3),
                                  round(row.score, 4), SOURCES.index(row.source), None])
    per_label = {label: {"videos": set(), "segments": 0, "seconds": 0.0, "evidence": [0, 0, 0]} for label in labels}
    for row in rows:
        totals = per_label[row.label]
        totals["videos"].add(row.path)
        totals["segments"] += 1
        totals["seconds"] += row.end - row.start
        totals["evidence"][SOURCES.index(row.source)] += 1
    videos, failures, requests = [], [], []
    for video in stored:
        if video.status != "ok":
            failures.append([video.path, video.error or "unknown reason"])
            continue
        segments = by_path.get(video.path, [])
        entry = {"path": video.path, "uri": Path(video.path).absolute().as_uri(),
                 "duration": round(video.duration or 0.0, 3), "fps": round(video.fps or 0.0, 3),
                 "size": f"{video.width}x{video.height}" if video.width else "", "model": video.model or "",
                 "segments": segments}
        best = sorted(segments, key=lambda s: (-s[3], s[1]))[: max(0, thumbnails)]
        if best:
            for k, segment in enumerate(best):
                segment[5] = f"{THUMBS_FOLDER}/{len(videos):06d}-{k}.jpg"
            requests.append((ThumbnailRequest(
                video.path, video.decoder, tuple((s[1] + s[2]) / 2 for s in best),
                tuple(thumbs / Path(s[5]).name for s in best)), entry))
        videos.append(entry)
    hours = sum(v["duration"] for v in videos) / 3600
    data = {
        "generated": time.strftime("%Y-%m-%d %H:%M"),
        "labels": labels,
        "summary": {"videos": len(videos) + len(failures), "tagged": len(videos), "failed": len(failures),
                    "hours": round(hours, 3), "segments": len(rows)},
        "per_label": [[label, len(t["videos"]), t["segments"], round(t["seconds"], 3), *t["evidence"]]
                      for label, t in per_label.items()],
        "failures": failures,
        "videos": videos,
    }
    return data, requests


def script_json(data: dict) -> str:
    """JSON that is inert inside `<script type="application/json">`: no `<`, `>` or `&` in it at all.

    ASCII only, so file names that are not valid UTF-8 (kept by Python as lone surrogates) still
    make a valid page; JSON.parse turns the escapes back into the text.
    """
    text = json.dumps(data, ensure_ascii=True, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def page_html(data: dict, title: str) -> str:
    """The report page: the template with the title escaped and the data embedded."""
    template = resources.files("tagger").joinpath(PAGE_TEMPLATE).read_text(encoding="utf-8")
    return template.replace(TITLE_MARK, html.escape(title)).replace(DATA_MARK, script_json(data))


def _write_atomically(target: Path, text: str) -> None:
    partial = target.with_name(target.name + ".partial")
    try:
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, target)
    except OSError as exc:
        raise UsageError(f"cannot write {target}: {exc.strerror}; pass another -o DIR") from exc
    finally:
        if partial.exists():
            partial.unlink()
