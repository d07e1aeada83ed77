"""What a scan stored, as plain data to compare across code changes: per video its status, decoder,
duration, window counts per stream and segments (scores rounded to 3 decimals).

`tests/golden/shared_clips.json` holds this for the shared clips scanned with the shipped models;
`python tests/regenerate_golden.py` rewrites it (and the other golden files) when a change is meant
to move tags.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

SHARED_CLIPS_GOLDEN = Path(__file__).parent / "golden" / "shared_clips.json"


def stored_tags(db: Path) -> dict[str, dict]:
    """basename -> what is stored about that video in the SQLite file `db`."""
    with sqlite3.connect(db) as conn:
        kinds = {model_id: json.loads(meta or "{}").get("tagger.kind", "video")
                 for model_id, meta in conn.execute("select id, meta from models")}
        found: dict[str, dict] = {}
        for video_id, path, status, decoder, duration in conn.execute(
                "select id, path, status, decoder, duration from videos order by path"):
            windows: dict[str, int] = {}
            for model_id, count in conn.execute(
                    "select model_id, count(*) from windows where video_id = ? group by model_id", (video_id,)):
                windows[kinds[model_id]] = count
            segments = [[label, round(start, 3), round(end, 3), round(score, 3), source]
                        for label, start, end, score, source in conn.execute(
                            "select label, start, end, score, source from segments where video_id = ? "
                            "order by label, start", (video_id,))]
            found[Path(path).name] = {"status": status, "decoder": decoder,
                                      "duration": None if duration is None else round(duration, 3),
                                      "windows": windows, "segments": segments}
    return found


def write_golden(db: Path, path: Path = SHARED_CLIPS_GOLDEN) -> None:
    path.write_text(json.dumps(stored_tags(db), indent=1, sort_keys=True) + "\n", encoding="utf-8")


def golden() -> dict[str, dict]:
    return json.loads(SHARED_CLIPS_GOLDEN.read_text(encoding="utf-8"))
