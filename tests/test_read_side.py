"""Reading tags back: every filter, every format, golden outputs, re-thresholding, injection."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from synthetic import BLUE, GREEN, GREY, RED, solid, timeline, write_colour_model, write_video
from tagger.cli import app

GOLDEN = Path(__file__).parent / "golden"
REGENERATE = os.environ.get("TAGGER_REGEN_GOLDEN") == "1"  # set by tests/regenerate_golden.py
FORMULA_LABEL = '=HYPERLINK("http://evil.example","x")'
SQL_LABEL = "x' OR 1=1 --"


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """A store filled by a real scan: four generated videos, a model whose labels are hostile text."""
    root = tmp_path_factory.mktemp("library") / "archive"
    (root / "b, \"quoted\"").mkdir(parents=True)
    write_video(root / "concert.avi", 10, colour_at=timeline((3, RED), (6, GREY), (99, BLUE)))
    write_video(root / "b, \"quoted\"" / "grün ü.mp4", 4, codec="h264", colour_at=timeline((2, GREEN), (99, RED)))
    write_video(root / "lecture.avi", 5, colour_at=solid(GREY))
    write_video(root / "long_blue.avi", 12, colour_at=timeline((1, GREY), (99, BLUE)))
    model = write_colour_model(tmp_path_factory.mktemp("m") / "hostile.onnx", labels=(FORMULA_LABEL, SQL_LABEL, "Blue"))
    db = root.parent / "tags.db"
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["scan", str(root), "--db", str(db), "--model", str(model), "-q"])
    assert result.exit_code == 0, result.output
    return root, db


def _run(runner, db, *args) -> str:
    result = runner.invoke(app, [*args, "--db", str(db)])
    assert result.exit_code == 0, result.output
    return result.stdout


def _golden(name: str, text: str, root: Path) -> None:
    text = text.replace(str(root), "{root}")
    path = GOLDEN / name
    if REGENERATE:
        path.write_text(text, encoding="utf-8")
        pytest.skip(f"regenerated {path}: compared on the next run")
    assert text == path.read_text(encoding="utf-8"), f"{name} differs; run python tests/regenerate_golden.py if intended"


@pytest.mark.parametrize(("name", "args"), [
    ("summary.csv", ["query", "--format", "csv"]),
    ("all.csv", ["query", "--all", "--format", "csv"]),
    ("all.tsv", ["query", "--all", "--format", "tsv"]),
    ("blue_by_score.json", ["query", "--label", "Blue", "--sort", "score", "--format", "json"]),
    ("by_time_limit3.csv", ["query", "--all", "--sort", "time", "--limit", "3", "--format", "csv"]),
    ("export.csv", ["export-csv"]),
    ("export_windows_concert.csv", ["export-csv", "--windows", "--path", "*concert*", "--label", "Blue"]),
])
def test_golden_outputs(name, args, library, runner):
    root, db = library
    _golden(name, _run(runner, db, *args), root)


def _labels_and_paths(text: str) -> list[tuple[str, str]]:
    return [(row["label"], Path(row["path"]).name) for row in json.loads(text)]


def test_filters(library, runner):
    root, db = library
    q = lambda *a: _labels_and_paths(_run(runner, db, "query", "--format", "json", *a))  # noqa: E731
    assert q("--label", "Blue") == [("Blue", "concert.avi"), ("Blue", "long_blue.avi")]
    assert sorted(q("--label", "Blue", "--label", SQL_LABEL)) == [
        ("Blue", "concert.avi"), ("Blue", "long_blue.avi"), (SQL_LABEL, "grün ü.mp4")]
    assert q("--all", "--path", "grün") == [(SQL_LABEL, "grün ü.mp4"), (FORMULA_LABEL, "grün ü.mp4")]
    assert q("--all", "--path", "*/long_*.avi") == [("Blue", "long_blue.avi")]
    assert q("--all", "--min-duration", "5") == [("Blue", "long_blue.avi")]
    assert q("--all", "--min-score", "0.95", "--label", "Blue") == []
    assert len(q("--all", "--min-score", "0.6")) == 5
    assert q("--all", "--model", "hostile", "--limit", "1") == [(SQL_LABEL, "grün ü.mp4")]
    assert q("--all", "--model", "no-such-model") == []
    assert q("--all", "--source", "audio") == []
    assert len(q("--all", "--source", "video")) == 5


def test_bad_filter_values_are_usage_errors(library, runner):
    _, db = library
    result = runner.invoke(app, ["query", "--all", "--sort", "size", "--db", str(db)])
    assert result.exit_code == 2
    assert result.stderr.strip() == "Error: --sort 'size' is not one of path, score, time"
    result = runner.invoke(app, ["query", "--format", "xml", "--db", str(db)])
    assert result.exit_code == 2
    assert result.stderr.strip() == "Error: --format 'xml' is not one of table, json, csv, tsv"


def test_hostile_text_is_matched_literally_and_exported_inert(library, runner):
    root, db = library
    assert _labels_and_paths(_run(runner, db, "query", "--label", SQL_LABEL, "--format", "json")) == [
        (SQL_LABEL, "grün ü.mp4")]
    assert _run(runner, db, "query", "--all", "--path", SQL_LABEL, "--format", "json").strip() == "[]"
    injected = runner.invoke(app, ["query", "--label", "' OR ''='", "--format", "json", "--db", str(db)])
    assert (injected.exit_code, injected.stdout) == (2, "")  # an unknown label, not a match for everything
    exported = _run(runner, db, "export-csv", "--label", FORMULA_LABEL)
    rows = list(csv.DictReader(io.StringIO(exported)))
    assert rows and all(row["label"] == "'" + FORMULA_LABEL for row in rows)
    with sqlite3.connect(db) as conn:  # the tables are all still there
        assert conn.execute("select count(*) from segments").fetchone()[0] == 5


def test_csv_round_trip_reproduces_every_stored_segment(library, runner, tmp_path):
    root, db = library
    target = tmp_path / "all.csv"
    runner.invoke(app, ["export-csv", "--db", str(db), "-o", str(target)])
    with open(target, newline="", encoding="utf-8") as handle:
        exported = sorted((r["path"], r["label"].lstrip("'"), float(r["start_s"]), float(r["end_s"]), float(r["score"]))
                          for r in csv.DictReader(handle))
    with sqlite3.connect(db) as conn:
        stored = sorted((p, label, round(s, 3), round(e, 3), round(score, 4)) for p, label, s, e, score in conn.execute(
            "select v.path, s.label, s.start, s.end, s.score from segments s join videos v on v.id = s.video_id"))
    assert exported == stored
    assert any('"quoted"' in row[0] and "," in row[0] for row in exported)  # quoting round-tripped


def test_rethreshold_from_window_scores_without_decoding(library, runner, tmp_path):
    root, db = library
    moved = tmp_path / "db_only.db"
    shutil.copy(db, moved)  # the videos are not needed: only stored window scores are read
    text = _run(runner, moved, "query", "--label", "Blue", "--threshold", "0.3", "--format", "json")
    segments = [(Path(r["path"]).name, r["start_s"], r["end_s"]) for r in json.loads(text)]
    assert segments == [("concert.avi", 3.0, 10.0), ("lecture.avi", 0.0, 5.0), ("long_blue.avi", 0.0, 12.0)]  # grey passes 0.3
    default = json.loads(_run(runner, moved, "query", "--label", "Blue", "--threshold", "0.5", "--format", "json"))
    stored = json.loads(_run(runner, moved, "query", "--label", "Blue", "--format", "json"))
    assert [(r["path"], r["start_s"], r["end_s"]) for r in default] == [(r["path"], r["start_s"], r["end_s"]) for r in stored]


def test_show_draws_a_timeline(library, runner):
    root, db = library
    text = _run(runner, db, "show", str(root / "concert.avi"))
    assert "status" in text and "ok" in text
    assert "Blue" in text and "█" * 10 in text
    assert "│ 0:00:06.0 │ 0:00:10.0 │" in text  # the time as `query` writes it (H:MM:SS.s)
    assert "00:00:06.000" not in text
    missing = runner.invoke(app, ["show", str(root / "nope.avi"), "--db", str(db)])
    assert missing.exit_code == 2
    assert missing.stderr.strip() == f"Error: {root / 'nope.avi'} is not in the database: scan it first (tagger scan {root / 'nope.avi'})"


def test_summary_honours_min_duration(library, runner):
    _, db = library
    rows = list(csv.DictReader(io.StringIO(_run(runner, db, "query", "--min-duration", "5", "--format", "csv"))))
    assert [(r["label"], r["segments"]) for r in rows] == [("Blue", "1")]


def test_a_glob_without_a_folder_matches_file_names(library, runner):
    _, db = library
    found = _labels_and_paths(_run(runner, db, "query", "--all", "--path", "long_*", "--format", "json"))
    assert found == [("Blue", "long_blue.avi")]


def test_a_failed_export_leaves_the_old_file_whole(runner, tmp_path):
    keep = tmp_path / "keep.csv"
    keep.write_text("precious,data\n")
    for args in (["--windows"], []):
        result = runner.invoke(app, ["export-csv", *args, "-o", str(keep), "--db", str(tmp_path / "missing.db")])
        assert result.exit_code == 5
        assert keep.read_text() == "precious,data\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.csv"]


def test_queries_are_not_blocked_by_a_writer(library, runner):
    import time

    _, db = library
    writer = sqlite3.connect(db, isolation_level=None, timeout=1)
    writer.execute("BEGIN IMMEDIATE")  # a scan in the middle of storing a video
    try:
        began = time.monotonic()
        result = runner.invoke(app, ["query", "--all", "--db", str(db), "--format", "json"])
        assert result.exit_code == 0, result.output
        assert len(json.loads(result.stdout)) == 5
        assert time.monotonic() - began < 5
    finally:
        writer.execute("ROLLBACK")
        writer.close()
