"""`tagger learn` and `tagger retag`: a label taught from a handful of generated videos tags the
held-out ones, through the CLI, and nothing is decoded after the first scan."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from synthetic import BLUE, GREEN, GREY, RED, solid, timeline, write_colour_model, write_video
from tagger.cli import app
from tagger.heads import Head, read_addon, write_addon

MAGENTA = (200, 40, 180)  # the taught colour: red and blue high together, which no colour label says
COUNTING = ("--decoders", "fake_decoders:CountingSource", "--workers", "1")


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """3 s videos (1 s windows of the colour model): four magenta (three taught, one held out), a
    9 s one grey, magenta from 3 s to 6 s, then green, and under negatives/ red, blue and grey ones."""
    root = tmp_path_factory.mktemp("archive")
    (root / "negatives").mkdir()
    for i in range(4):
        write_video(root / f"magenta{i}.avi", 3, colour_at=solid(MAGENTA))
    write_video(root / "concert.avi", 9, colour_at=timeline((3, GREY), (6, MAGENTA), (99, GREEN)))
    for name, colour in (("red", RED), ("blue", BLUE), ("grey", GREY)):
        for i in range(2):
            write_video(root / "negatives" / f"{name}{i}.avi", 3, colour_at=solid(colour))
    return root


@pytest.fixture
def no_decoding(monkeypatch):
    """In this process (learn, retag and similar run in it), any attempt to open a video fails the test."""
    import tagger.decode
    import tagger.step

    def refuse(*args, **kwargs):
        raise AssertionError("a video was opened for decoding")

    monkeypatch.setattr(tagger.decode, "open_video", refuse)
    monkeypatch.setattr(tagger.step, "open_video", refuse)


@pytest.fixture
def db(any_db) -> str:
    return any_db


@pytest.fixture(scope="module")
def scanned(archive, feature_model, tmp_path_factory) -> Path:
    """The archive scanned once (a SQLite file; tests that change it take a copy)."""
    from typer.testing import CliRunner

    db = tmp_path_factory.mktemp("scanned") / "t.db"
    result = CliRunner().invoke(app, ["scan", str(archive), "--db", str(db), "--model", str(feature_model), "-q"])
    assert result.exit_code == 0, result.output
    return db


def _invoke(runner, *args):
    return runner.invoke(app, [str(a) for a in args])


def _tagged(runner, db, label) -> list[tuple]:
    result = _invoke(runner, "query", "--label", label, "--format", "json", "--db", db)
    assert result.exit_code == 0, result.output
    return [(Path(r["path"]).name, r["start_s"], r["end_s"]) for r in json.loads(result.stdout)]


def test_a_taught_label_tags_held_out_videos_without_decoding(runner, db, archive, feature_model, opens, tmp_path,
                                                            monkeypatch):
    monkeypatch.setenv("TAGGER_HEADS", str(tmp_path / "heads"))
    scanned = _invoke(runner, "scan", archive, "--db", db, "--model", feature_model, *COUNTING, "-q")
    assert scanned.exit_code == 0, scanned.output
    assert len(opens.read_text().splitlines()) == 11

    with monkeypatch.context() as patch:  # from here on, nothing in this process may decode
        import tagger.decode
        import tagger.step

        for module in (tagger.decode, tagger.step):
            patch.setattr(module, "open_video", lambda *a, **k: pytest.fail("a video was opened for decoding"))
        learnt = _invoke(runner, "learn", "Magenta", "--db", db, "--model", feature_model,
                         "--positive", archive / "magenta0.avi", "--positive", archive / "magenta1.avi",
                         "--positive", f"{archive / 'magenta2.avi'}@0-2", "--negative", archive / "negatives")
        assert learnt.exit_code == 0, learnt.output
        lines = learnt.stdout.splitlines()
        assert lines[:4] == ["Magenta: 3 positive examples (8 windows in 3 videos)",
                             "negatives: 18 windows in 6 videos",
                             "held out by video, 3 folds: precision 1.00, recall 1.00 (windows)",
                             "  found 3 of 3 positive examples, tagged 0 of 6 negative videos"]
        assert lines[4].startswith("threshold ") and "(best F1 held out; L2 " in lines[4]
        assert lines[5:] == ["would tag 5 of 11 videos with features: 5 segments, 0:00:15.0",
                             f"wrote {tmp_path / 'heads' / 'Magenta.head.json'}",
                             "tagger retag applies it to stored videos (no decoding); scans, to new ones"]
        assert max(len(line) for line in lines[:6] + lines[7:]) <= 80
        head = read_addon(tmp_path / "heads" / "Magenta.head.json")
        assert (head.labels, head.space, head.dim) == (("Magenta",), "colour-test-1", 3)
        assert (head.info["positives"], head.info["positive_windows"], head.info["negative_windows"]) == (3, 8, 18)

        listed = _invoke(runner, "models", "--model", feature_model)
        assert listed.exit_code == 0, listed.output
        row = next(line for line in listed.stdout.splitlines() if "Magenta" in line and "+," in line)
        assert [cell.strip() for cell in row.split("│")[1:5]] == [
            "Magenta", "3 +, 18 -", "P 1.00 R 1.00", f"{head.thresholds['Magenta']:.2f}"]

        retagged = _invoke(runner, "retag", "--db", db, "--model", feature_model)
        assert retagged.exit_code == 0, retagged.output
        assert retagged.stdout == ""
        assert retagged.stderr == ("retagged 11 of 11 stored videos from their features, no decoding: 20 segments\n"
                                   "0 already current; model colour_features.onnx; add-on heads: Magenta\n")
        assert _tagged(runner, db, "Magenta") == [("concert.avi", 3.0, 6.0), ("magenta0.avi", 0.0, 3.0),
                                                  ("magenta1.avi", 0.0, 3.0), ("magenta2.avi", 0.0, 3.0),
                                                  ("magenta3.avi", 0.0, 3.0)]
    assert len(opens.read_text().splitlines()) == 11  # no scan decoded anything either

    write_video(archive / "magenta_new.avi", 2, colour_at=solid(MAGENTA))
    try:
        rescan = _invoke(runner, "scan", archive, "--db", db, "--model", feature_model, *COUNTING, "--json")
    finally:
        (archive / "magenta_new.avi").unlink()
    assert rescan.exit_code == 0, rescan.output
    assert json.loads(rescan.stdout)["tagged"] == 1  # the new one, decoded and tagged during the scan
    assert opens.read_text().splitlines()[11:] == [str(archive / "magenta_new.avi")]
    assert ("magenta_new.avi", 0.0, 2.0) in _tagged(runner, db, "Magenta")


def test_retag_lists_the_videos_stored_without_features(runner, scanned, archive, feature_model, opens, tmp_path,
                                                        no_decoding):
    db = tmp_path / "t.db"
    shutil.copy(scanned, db)
    featureless = archive / "negatives" / "grey1.avi"
    heads = tmp_path / "heads"
    write_addon(Head(("Magenta",), "colour-test-1", np.array([[10.0, -10.0, 10.0]], np.float32),
                     np.array([-10.0], np.float32), {"Magenta": 0.5}), heads)
    _drop_features(db, featureless)
    result = _invoke(runner, "retag", "--db", db, "--model", feature_model, "--heads", heads)
    assert result.exit_code == 3
    assert result.stdout == f"{featureless}\tscanned without features\n"
    assert result.stderr == (
        "retagged 10 of 11 stored videos from their features, no decoding: 20 segments\n"
        "0 already current; model colour_features.onnx; add-on heads: Magenta\n"
        "1 video could not be re-tagged without decoding (listed above)\n"
        "a rescan with features fixes it: tagger scan --force PATH\n")
    again = _invoke(runner, "retag", "--db", db, "--model", feature_model, "--heads", heads, "--quiet")
    assert (again.exit_code, again.stdout, again.stderr) == (3, f"{featureless}\tscanned without features\n", "")


def _drop_features(db: Path, video: Path) -> None:
    """Make `video` as a --no-features scan stores it (its windows keep their scores only)."""
    import sqlite3

    with sqlite3.connect(db) as conn:
        conn.execute("update windows set features = null where video_id = (select id from videos where path = ?)",
                     (str(video),))


def test_retag_after_a_rescan_with_features(runner, archive, feature_model, opens, tmp_path):
    db, heads = str(tmp_path / "t.db"), tmp_path / "heads"
    video = archive / "magenta3.avi"
    assert _invoke(runner, "scan", video, "--db", db, "--model", feature_model, "--no-features", *COUNTING,
                   "-q").exit_code == 0
    write_addon(Head(("Magenta",), "colour-test-1", np.array([[10.0, -10.0, 10.0]], np.float32),
                     np.array([-10.0], np.float32), {"Magenta": 0.5}), heads)
    assert _invoke(runner, "retag", "--db", db, "--model", feature_model, "--heads", heads).exit_code == 3
    rescan = _invoke(runner, "scan", "--force", video, "--db", db, "--model", feature_model, "--heads", heads,
                     *COUNTING, "-q")
    assert rescan.exit_code == 0, rescan.output
    done = _invoke(runner, "retag", "--db", db, "--model", feature_model, "--heads", heads)
    assert (done.exit_code, done.stdout) == (0, "")
    assert done.stderr == ("retagged 0 of 1 stored video from their features, no decoding: 0 segments\n"
                           "1 already current; model colour_features.onnx; add-on heads: Magenta\n")
    assert _tagged(runner, db, "Magenta") == [("magenta3.avi", 0.0, 3.0)]


@pytest.fixture(scope="module")
def other_space(archive, tmp_path_factory) -> tuple[Path, Path]:
    """A database where magenta3.avi was scanned by a model of another feature space, and grey0 without
    features; the model of that other space."""
    from typer.testing import CliRunner

    folder = tmp_path_factory.mktemp("other")
    model = write_colour_model(folder / "other_space.onnx", features=True, space="colour-test-2")
    db = folder / "t.db"
    runner = CliRunner()
    for video, extra in ((archive / "magenta3.avi", ("--model", model)),
                         (archive / "negatives" / "grey0.avi", ("--no-features",))):
        result = runner.invoke(app, ["scan", str(video), "--db", str(db), "-q", *map(str, extra)])
        assert result.exit_code == 0, result.output
    return db, model


def _learning_errors(archive: Path, colour_model: Path) -> list:
    """(arguments, exit code, the one line) of each kind of bad input."""
    m = [str(archive / f"magenta{i}.avi") for i in range(4)]
    return [
        (["--positive", "/no/such.avi", "--positive", m[0], "--positive", m[1]], 2,
         "Error: --positive /no/such.avi: not in the database: scan it first (tagger scan /no/such.avi)"),
        (["--positive", f"{m[0]}@2-9", "--positive", m[1], "--positive", m[2]], 2,
         f"Error: --positive {m[0]}@2-9: the span is outside the video, which is 3.000 s long"),
        (["--positive", f"{m[0]}@2-1"], 2, f"Error: --positive {m[0]}@2-1: the span ends before it starts: give START-END"),
        (["--positive", f"{m[0]}@0-1:75"], 2,
         "Error: '1:75' is not a time: give seconds (75.5), MM:SS or HH:MM:SS(.s)"),
        (["--positive", m[0], "--positive", m[1]], 2,
         "Error: Magenta has 2 positive examples: give at least 3 (--positive PATH[@START-END], --positive-query "
         "label=...,path=...)"),
        (["--positive-query", "colour=magenta"], 2,
         "Error: --positive-query 'colour=magenta': 'colour=magenta' is not KEY=VALUE with KEY one of label, path, "
         "min-score"),
        (["--positive-query", "label=Nothing"], 2, "Error: --positive-query 'label=Nothing' matches no stored segment"),
        (["--positive", *m[:3], "--model", str(colour_model)], 4,
         f"Error: {colour_model} gives no features (tagger.features): learn needs a vision model that does"),
    ]


def test_learn_says_what_is_wrong_in_one_line(runner, scanned, archive, feature_model, colour_model, tmp_path,
                                             no_decoding):
    for args, code, message in _learning_errors(archive, colour_model):
        model = [] if "--model" in args else ["--model", str(feature_model)]
        result = _invoke(runner, "learn", "Magenta", "--db", scanned, "--heads", tmp_path, *model,
                         *_expand(args))
        assert (result.exit_code, result.stderr) == (code, message + "\n"), args
    assert list(tmp_path.glob("*.head.json")) == []


def _expand(args: list[str]) -> list[str]:
    """`--positive a b c` as `--positive a --positive b --positive c`."""
    out, option = [], None
    for arg in args:
        if arg.startswith("--"):
            option = arg
            continue
        out += [option, arg]
    return out


def test_learn_refuses_videos_without_features_or_of_another_space(runner, archive, feature_model, other_space,
                                                                  tmp_path, no_decoding):
    db, _ = other_space
    m3, grey0 = archive / "magenta3.avi", archive / "negatives" / "grey0.avi"
    featureless = _invoke(runner, "learn", "Magenta", "--db", db, "--model", feature_model, "--heads", tmp_path,
                          "--positive", grey0, "--positive", f"{grey0}@0-1", "--positive", f"{grey0}@1-2")
    assert (featureless.exit_code, featureless.stderr) == (
        2, f"Error: {grey0} was scanned without features: rescan it with features (tagger scan --force {grey0})\n")
    elsewhere = _invoke(runner, "learn", "Magenta", "--db", db, "--model", feature_model, "--heads", tmp_path,
                        "--positive", m3, "--positive", f"{m3}@0-1", "--positive", f"{m3}@1-2")
    assert (elsewhere.exit_code, elsewhere.stderr) == (
        2, f"Error: {m3} has features of another space (colour-test-2, by other_space), not colour-test-1 of "
           f"colour_features: rescan it with colour_features (tagger scan --force {m3})\n")


def test_learn_takes_examples_from_stored_segments(runner, scanned, archive, feature_model, tmp_path, no_decoding):
    """Blue's stored segments as positives, the red videos (a folder query) as negatives; with one
    positive video only, held out by example."""
    result = _invoke(runner, "learn", "Bluish", "--db", scanned, "--model", feature_model, "--heads", tmp_path,
                     "--positive-query", "label=Blue,path=*/negatives/*", "--negative-query", "path=*red*")
    assert result.exit_code == 2  # two blue videos: two segments
    assert result.stderr == ("Error: Bluish has 2 positive examples: give at least 3 (--positive PATH[@START-END], "
                             "--positive-query label=...,path=...)\n")
    blue = archive / "negatives" / "blue0.avi"
    one_video = _invoke(runner, "learn", "Bluish", "--db", scanned, "--model", feature_model, "--heads", tmp_path,
                        "--positive", f"{blue}@0-1", "--positive", f"{blue}@1-2", "--positive", f"{blue}@2-3",
                        "--negative-query", "path=*red*")
    assert one_video.exit_code == 0, one_video.output
    assert one_video.stdout.splitlines()[:2] == ["Bluish: 3 positive examples (3 windows in 1 video)",
                                                 "negatives: 6 windows in 2 videos"]
    assert one_video.stdout.splitlines()[2].startswith("held out by example, 3 folds: ")
