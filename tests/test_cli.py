"""Every command has help with an example; `models`, `query` and `export-csv` read back what a scan stored."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from tagger.cli import app

COMMANDS = [command.name or command.callback.__name__.replace("_", "-") for command in app.registered_commands]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(runner, command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert f"Example: tagger {command}" in result.stdout


def test_models_shows_labels_window_and_providers(runner, colour_model):
    result = runner.invoke(app, ["models", "--model", str(colour_model)])
    assert result.exit_code == 0
    for text in ("colour-test", "4 frames every 0.250 s = 1.00 s", "CPUExecutionProvider", "Red", "Green", "Blue"):
        assert text in result.stdout


def test_models_says_whether_a_model_stores_features(runner, colour_model, feature_model):
    plain = runner.invoke(app, ["models", "--model", str(colour_model)], terminal_width=80)
    with_features = runner.invoke(app, ["models", "--model", str(feature_model)], terminal_width=80)
    assert plain.exit_code == 0 and "none (labels taught later need a rescan)" in plain.stdout
    assert with_features.exit_code == 0 and "3 values a window (tagger learn, similar)" in with_features.stdout


@pytest.fixture(scope="module")
def filled_db(red_grey_blue_video, colour_model, tmp_path_factory):
    from typer.testing import CliRunner

    db = tmp_path_factory.mktemp("filled") / "tags.db"
    result = CliRunner().invoke(app, ["scan", str(red_grey_blue_video), "--db", str(db), "--model", str(colour_model), "-q"])
    assert result.exit_code == 0, result.output
    return db


def test_query_filters_by_label_and_prints_json(runner, filled_db, red_grey_blue_video):
    result = runner.invoke(app, ["query", "--db", str(filled_db), "--label", "Red", "--format", "json"])
    assert result.exit_code == 0
    (record,) = json.loads(result.stdout)
    assert record["path"] == str(red_grey_blue_video)
    assert (record["label"], record["start_s"], record["end_s"]) == ("Red", 0.0, 3.0)
    assert (record["start_tc"], record["end_tc"], record["duration_s"]) == ("00:00:00.000", "00:00:03.000", 3.0)


def test_export_csv_round_trips_through_dictreader(runner, filled_db, tmp_path, red_grey_blue_video):
    target = tmp_path / "out.csv"
    result = runner.invoke(app, ["export-csv", "--db", str(filled_db), "-o", str(target)])
    assert result.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(target.read_text(encoding="utf-8"))))
    assert [(r["label"], r["start_s"], r["end_s"]) for r in rows] == [("Red", "0.0", "3.0"), ("Blue", "6.0", "10.0")]
    assert {r["path"] for r in rows} == {str(red_grey_blue_video)}
    assert rows[0]["video_duration_s"] == "10.0" and rows[0]["fps"] == "25.0"


@pytest.mark.shipped_audio
def test_models_says_what_the_shipped_models_can_and_cannot_tag(runner):
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    lines = {line.split("│")[1].strip(): line.split("│")[2].strip() for line in result.stdout.splitlines()
             if line.count("│") == 3 and line.split("│")[1].strip().startswith(("Playing", "Drumming"))}
    assert lines["PlayingGuitar"] == "vision and sound"
    assert lines["PlayingSitar"] == "vision and sound"  # the default model v2 sees sitars
    assert lines["PlayingTabla"] == "vision"
    assert "PlayingDaf" not in lines  # neither model knows it: tagger/ holds no outside label list
    assert "not tagged: PlayingDaf: no example to learn from: needs UCF101" in result.stdout.splitlines()
    assert "efficientnet-lite0" in result.stdout and "16000 Hz" in result.stdout
    assert "sound model: " in result.stdout and "(shipped with the default model)" in result.stdout


def test_every_package_of_the_source_tree_is_installed():
    """A plain `pip install .` installs only the packages pyproject.toml lists: a new subpackage
    missing there works from a checkout and fails for every user (tagger.executors once did)."""
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")
    root = Path(__file__).resolve().parents[1]
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(init.parent.relative_to(root).parts) for folder in ("tagger", "training")
             for init in (root / folder).rglob("__init__.py")}
    assert found - listed == set()
