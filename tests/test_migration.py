"""A database written by an older tagger is brought up to date in place, keeping every row."""

from __future__ import annotations

import json
import sqlite3

from tagger.cli import app
from tagger.schema import SCHEMA_VERSION


def _rows(db, sql):
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


def _schema_1_database(runner, video, model, db):
    """`video` scanned into `db`, then turned into what tagger wrote with schema 1 (no videos.settings)."""
    assert runner.invoke(app, ["scan", str(video), "--db", str(db), "--model", str(model), "-q"]).exit_code == 0
    with sqlite3.connect(db) as conn:
        conn.execute("ALTER TABLE videos DROP COLUMN settings")
        conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    return db


def test_a_schema_1_database_is_migrated_and_keeps_its_tags(red_grey_blue_video, colour_model, tmp_path, runner):
    db = _schema_1_database(runner, red_grey_blue_video, colour_model, tmp_path / "old.db")
    segments = _rows(db, "select label, start, end, score from segments order by start")
    windows = _rows(db, "select start, end, scores from windows order by start")
    assert "settings" not in {column for _, column, *_ in _rows(db, "pragma table_info(videos)")}

    listed = runner.invoke(app, ["query", "--db", str(db), "--label", "Red", "--label", "Blue", "--format",
                                "json"])  # a reader migrates too
    assert listed.exit_code == 0, listed.output
    assert [(s["label"], s["start_s"], s["end_s"]) for s in json.loads(listed.stdout)] == [
        (label, start, end) for label, start, end, _ in segments]
    assert _rows(db, "select value from meta where key = 'schema_version'") == [(str(SCHEMA_VERSION),)]
    assert "settings" in {column for _, column, *_ in _rows(db, "pragma table_info(videos)")}
    assert _rows(db, "select label, start, end, score from segments order by start") == segments
    assert _rows(db, "select start, end, scores from windows order by start") == windows
    assert _rows(db, "select settings from videos") == [(None,)]

    # Tags stored before settings were recorded count as current: no re-tagging a whole archive.
    again = runner.invoke(app, ["scan", str(red_grey_blue_video), "--db", str(db), "--model", str(colour_model),
                                "--json"])
    assert (json.loads(again.stdout)["tagged"], json.loads(again.stdout)["skipped"]) == (0, 1)
    forced = runner.invoke(app, ["scan", str(red_grey_blue_video), "--db", str(db), "--model", str(colour_model),
                                 "--force", "-q"])
    assert forced.exit_code == 0
    assert json.loads(_rows(db, "select settings from videos")[0][0])["windows"]["streams"] == "both"
    assert _rows(db, "select label, start, end, score from segments order by start") == segments


def test_a_schema_1_database_opened_read_only_is_read_as_it_is(red_grey_blue_video, colour_model, tmp_path,
                                                                runner):
    db = _schema_1_database(runner, red_grey_blue_video, colour_model, tmp_path / "old.db")
    read_only = f"sqlite:///file:{db}?mode=ro&uri=true"
    listed = runner.invoke(app, ["query", "--db", read_only, "--label", "Red", "--format", "json"])
    assert listed.exit_code == 0, listed.output
    assert [(s["label"], s["start_s"], s["end_s"]) for s in json.loads(listed.stdout)] == [("Red", 0.0, 3.0)]
    shown = runner.invoke(app, ["show", str(red_grey_blue_video), "--db", read_only])
    assert shown.exit_code == 0, shown.output
    assert "Red" in shown.stdout and "settings" not in shown.stdout
    assert _rows(db, "select value from meta where key = 'schema_version'") == [("1",)]  # left as it was


def test_a_database_without_a_version_row_is_migrated_not_stamped(red_grey_blue_video, colour_model, tmp_path,
                                                                   runner):
    db = _schema_1_database(runner, red_grey_blue_video, colour_model, tmp_path / "old.db")
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM meta WHERE key = 'schema_version'")
    again = runner.invoke(app, ["scan", str(red_grey_blue_video), "--db", str(db), "--model", str(colour_model),
                                "--threshold", "0.3", "--force", "-q"])
    assert again.exit_code == 0, again.output
    assert _rows(db, "select value from meta where key = 'schema_version'") == [(str(SCHEMA_VERSION),)]
    assert json.loads(_rows(db, "select settings from videos")[0][0])["segments"]["threshold"] == 0.3
