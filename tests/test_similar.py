"""`tagger similar`: the stored windows most like one moment, on generated videos of known colours,
and the feature index it reads, kept in step with the database."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from synthetic import BLUE, GREEN, GREY, RED, solid, timeline, write_video
from tagger.cli import app

FIELDS = ["rank", "path", "start_s", "end_s", "start_tc", "end_tc", "similarity", "tags"]


@pytest.fixture(scope="module")
def colours(tmp_path_factory) -> Path:
    """3 s videos (1 s windows): red, blue, green, grey; and mixed.avi: grey 0-2 s, red 2-4 s, blue 4-6 s."""
    root = tmp_path_factory.mktemp("colours")
    for name, colour in (("red", RED), ("blue", BLUE), ("green", GREEN), ("grey", GREY)):
        write_video(root / f"{name}.avi", 3, colour_at=solid(colour))
    write_video(root / "mixed.avi", 6, colour_at=timeline((2, GREY), (4, RED), (99, BLUE)))
    return root


@pytest.fixture
def db(any_db) -> str:
    return any_db


def _scan(runner, db, *args) -> None:
    result = runner.invoke(app, ["scan", *map(str, args), "--db", db, "-q"])
    assert result.exit_code == 0, result.output


def _similar(runner, db, *args) -> list[dict]:
    result = runner.invoke(app, ["similar", *map(str, args), "--db", db, "--format", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_the_most_similar_windows_are_those_of_the_same_colour(runner, db, colours, feature_model):
    _scan(runner, db, colours, "--model", feature_model)
    hits = _similar(runner, db, colours / "mixed.avi", "--at", "2.5", "--top", "5")
    assert [list(h) for h in hits] == [FIELDS] * 5
    assert hits[0]["rank"] == 1 and [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
    # the other red window of mixed.avi and the three of red.avi, then the first blue-ish or grey one
    assert {(Path(h["path"]).name, h["start_s"]) for h in hits[:4]} == {
        ("mixed.avi", 3.0), ("red.avi", 0.0), ("red.avi", 1.0), ("red.avi", 2.0)}
    assert all(h["similarity"] > 0.99 and h["tags"] == "Red" for h in hits[:4])
    assert hits[4]["similarity"] < 0.9
    assert [h["similarity"] for h in hits] == sorted((h["similarity"] for h in hits), reverse=True)
    elsewhere = _similar(runner, db, colours / "mixed.avi", "--at", "0:05", "--top", "3", "--other-videos")
    assert sorted((Path(h["path"]).name, h["start_s"], h["end_s"], h["start_tc"], h["tags"]) for h in elsewhere) == [
        ("blue.avi", 0.0, 1.0, "00:00:00.000", "Blue"), ("blue.avi", 1.0, 2.0, "00:00:01.000", "Blue"),
        ("blue.avi", 2.0, 3.0, "00:00:02.000", "Blue")]


def test_similar_csv_has_a_row_per_hit(runner, colours, feature_model, tmp_path):
    db = str(tmp_path / "t.db")
    _scan(runner, db, colours / "green.avi", colours / "grey.avi", "--model", feature_model)
    result = runner.invoke(app, ["similar", str(colours / "green.avi"), "--at", "1", "--db", db, "--format", "csv"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == ",".join(FIELDS)
    assert len(lines) == 1 + 5  # every other window of the two videos: 2 green, 3 grey
    assert [line.split(",")[1].rsplit("/", 1)[1] for line in lines[1:]] == ["green.avi"] * 2 + ["grey.avi"] * 3


def test_similar_says_what_is_wrong_in_one_line(runner, colours, feature_model, colour_model, tmp_path):
    db = str(tmp_path / "t.db")
    _scan(runner, db, colours / "red.avi", "--model", feature_model)
    _scan(runner, db, colours / "blue.avi", "--model", feature_model, "--no-features")
    red, blue, grey = (str(colours / f"{name}.avi") for name in ("red", "blue", "grey"))
    cases = [
        ([grey, "--at", "1"], 2, f"Error: {grey} is not in the database: scan it first (tagger scan {grey})"),
        ([red, "--at", "9"], 2, f"Error: --at 9 s is past the end of {red} (3.0 s)"),
        ([red, "--at", "1:75"], 2, "Error: '1:75' is not a time: give seconds (75.5), MM:SS or HH:MM:SS(.s)"),
        ([blue, "--at", "1"], 2,
         f"Error: {blue} was scanned without features: rescan it with features (tagger scan --force {blue})"),
        ([red, "--at", "1", "--top", "0"], 2, "Error: --top must be between 1 and 10000, got 0"),
        ([red], 2, "Error: Missing option '--at'. (see tagger similar --help)"),
    ]
    for args, code, message in cases:
        result = runner.invoke(app, ["similar", *args, "--db", db], prog_name="tagger")
        assert (result.exit_code, result.stderr) == (code, message + "\n"), args


def test_the_index_follows_the_database(runner, colours, feature_model, tmp_path):
    """New videos are added to the index, videos stored again replace their rows, and compaction
    keeps exactly the stored windows."""
    from tagger.database import Database
    from tagger.feature_index import FeatureIndex
    from tagger.identity import stored_models

    db = str(tmp_path / "t.db")

    def index_matches_database() -> int:
        store = Database(db, create=False)
        try:
            with store.read() as conn:
                known = stored_models(conn)
                stored = sorted(conn.exec_driver_sql("select id from windows where features is not null").scalars())
                with FeatureIndex.opened(conn, db, "colour-test-1", 3, known.vision_ids("colour-test-1")) as index:
                    live = index.rows[index.live]
                    assert sorted(live["window"].tolist()) == stored
                    features = {row[0]: np.frombuffer(row[1], "<f2").astype(np.float32) for row in
                                conn.exec_driver_sql("select id, features from windows where features is not null")}
                    for position in np.flatnonzero(index.live):
                        expected = features[int(index.rows["window"][position])]
                        assert np.allclose(index.features(np.array([position]))[0], expected, atol=1e-6)
                    return index.size
        finally:
            store.close()

    _scan(runner, db, colours / "red.avi", colours / "blue.avi", "--model", feature_model)
    assert index_matches_database() == 6
    _scan(runner, db, colours / "green.avi", "--model", feature_model)
    assert index_matches_database() == 9  # appended, nothing read again
    _scan(runner, db, colours / "red.avi", "--model", feature_model, "--force")
    assert index_matches_database() == 12  # red's old rows are gone, its new ones appended
    for _ in range(3):
        _scan(runner, db, colours / "blue.avi", "--model", feature_model, "--force")
    assert index_matches_database() == 9  # more than a quarter gone: compacted
    _scan(runner, db, colours / "grey.avi", "--model", feature_model, "--no-features")
    assert index_matches_database() == 9  # no features, nothing to add
