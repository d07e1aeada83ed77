"""Bad input: one line that says what and what to do, the documented exit code, no traceback."""

from __future__ import annotations

import json
import sqlite3

import pytest

from synthetic import RED, solid, write_colour_model, write_video
from tagger.cli import app
from tagger.schema import SCHEMA_VERSION


def _error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.output
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_missing_path_is_a_usage_error(runner, colour_model, tmp_path):
    result = runner.invoke(app, ["scan", str(tmp_path / "nope"), "--model", str(colour_model), "--db", str(tmp_path / "t.db")])
    assert result.exit_code == 2
    assert _error_line(result) == f"Error: path not found: {tmp_path / 'nope'} (check the spelling, or quote paths with spaces)"


def test_missing_model_exits_4(runner, red_grey_blue_video, tmp_path):
    missing = tmp_path / "missing.onnx"
    result = runner.invoke(app, ["scan", str(red_grey_blue_video), "--model", str(missing), "--db", str(tmp_path / "t.db")])
    assert result.exit_code == 4
    assert _error_line(result) == f"Error: model not found: {missing} (pass --model PATH or set TAGGER_MODEL)"


def test_a_file_that_is_not_onnx_exits_4(runner, red_grey_blue_video, tmp_path):
    fake = tmp_path / "fake.onnx"
    fake.write_text("this is not a model")
    result = runner.invoke(app, ["scan", str(red_grey_blue_video), "--model", str(fake), "--db", str(tmp_path / "t.db")])
    assert result.exit_code == 4
    assert _error_line(result) == f"Error: not an ONNX model: {fake}: pass an exported .onnx file"


def test_onnx_without_tagger_metadata_exits_4(runner, red_grey_blue_video, tmp_path):
    import onnx

    path = write_colour_model(tmp_path / "bare.onnx")
    model = onnx.load(str(path))
    del model.metadata_props[:]
    onnx.save(model, str(path))
    result = runner.invoke(app, ["models", "--model", str(path)])
    assert result.exit_code == 4
    assert _error_line(result).startswith(f"Error: {path} has no tagger metadata (tagger.labels, tagger.clip_len")
    assert _error_line(result).endswith("missing): export it with `python -m training.export`")


def test_input_shape_that_breaks_the_contract_exits_4(runner, tmp_path):
    import onnx

    path = write_colour_model(tmp_path / "lying.onnx", clip_len=4)
    model = onnx.load(str(path))
    for prop in model.metadata_props:
        if prop.key == "tagger.clip_len":
            prop.value = "8"  # the graph takes 4 frames
    onnx.save(model, str(path))
    result = runner.invoke(app, ["models", "--model", str(path)])
    assert result.exit_code == 4
    assert _error_line(result) == (
        f"Error: {path}: input frames has shape ['N', 4, 32, 32, 3], expected [N, 8, 32, 32, 3]"
    )


def test_cuda_asked_for_without_cuda_exits_4_naming_the_missing_piece(runner, colour_model):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine has CUDA: the missing-CUDA path cannot be exercised")
    result = runner.invoke(app, ["models", "--model", str(colour_model), "--device", "cuda"])
    assert result.exit_code == 4
    assert _error_line(result) == (
        "Error: CUDA was asked for but this onnxruntime has no CUDAExecutionProvider: "
        "pip uninstall onnxruntime && pip install onnxruntime-gpu, or use --device cpu"
    )


def test_unknown_device_is_a_usage_error(runner, colour_model):
    result = runner.invoke(app, ["models", "--model", str(colour_model), "--device", "tpu"])
    assert result.exit_code == 2
    assert _error_line(result) == "Error: unknown --device 'tpu': choose one of auto, cpu, cuda"


def test_a_non_database_file_as_db_exits_5(runner, red_grey_blue_video, colour_model, tmp_path):
    db = tmp_path / "notes.db"
    db.write_text("shopping list\n" * 100)
    result = runner.invoke(app, ["scan", str(red_grey_blue_video), "--model", str(colour_model), "--db", str(db)])
    assert result.exit_code == 5
    assert _error_line(result) == f"Error: cannot use database {db}: file is not a database; pass another --db"
    assert db.read_text() == "shopping list\n" * 100  # untouched


def test_a_database_from_a_newer_tagger_exits_5(runner, red_grey_blue_video, colour_model, tmp_path):
    db = tmp_path / "future.db"
    with sqlite3.connect(db) as conn:
        conn.execute("create table meta (key text primary key, value text)")
        conn.execute("insert into meta values ('schema_version', ?)", (str(SCHEMA_VERSION + 1),))
    result = runner.invoke(app, ["scan", str(red_grey_blue_video), "--model", str(colour_model), "--db", str(db)])
    assert result.exit_code == 5
    assert _error_line(result) == (
        f"Error: database {db} has schema version {SCHEMA_VERSION + 1}, newer than this tagger's "
        f"{SCHEMA_VERSION}: upgrade tagger or pass another --db"
    )


def test_an_unwritable_database_location_exits_5(runner, red_grey_blue_video, colour_model, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    db = blocker / "sub" / "tags.db"  # a folder cannot be made inside a file
    result = runner.invoke(app, ["scan", str(red_grey_blue_video), "--model", str(colour_model), "--db", str(db)])
    assert result.exit_code == 5
    assert _error_line(result).startswith(f"Error: cannot create the database folder {blocker / 'sub'}: ")


def test_query_without_a_database_exits_5(runner, tmp_path):
    result = runner.invoke(app, ["query", "--db", str(tmp_path / "none.db")])
    assert result.exit_code == 5
    assert _error_line(result) == f"Error: no database at {tmp_path / 'none.db'}: run `tagger scan` first, or pass --db"


def test_broken_files_fail_alone_and_exit_3(runner, colour_model, tmp_path):
    root = tmp_path / "mixed"
    root.mkdir()
    write_video(root / "good.mp4", 2, codec="h264", colour_at=solid(RED))
    (root / "empty.mp4").write_bytes(b"")
    (root / "random.avi").write_bytes(bytes(range(256)) * 40)
    db = tmp_path / "t.db"
    result = runner.invoke(app, ["scan", str(root), "--model", str(colour_model), "--db", str(db), "--json"])
    assert result.exit_code == 3
    summary = json.loads(result.stdout)
    assert summary["tagged"] == 1
    reasons = {item["path"].rsplit("/", 1)[1]: item["reason"] for item in summary["failed"]}
    assert reasons["empty.mp4"] == "empty file (0 bytes)"
    assert reasons["random.avi"] == "not a video (no decodable video stream)"
    with sqlite3.connect(db) as conn:
        rows = dict(conn.execute("select path, status from videos").fetchall())
        assert rows == {str(root / "good.mp4"): "ok", str(root / "empty.mp4"): "failed", str(root / "random.avi"): "failed"}
        assert conn.execute("select label from segments").fetchall() == [("Red",)]
    listed = runner.invoke(app, ["failed", "--db", str(db)])
    assert listed.exit_code == 0
    assert f"{root / 'empty.mp4'}\tempty file (0 bytes)" in listed.stdout


def test_shared_broken_files(shared_data, runner, colour_model, tmp_path):
    db = tmp_path / "t.db"
    result = runner.invoke(app, ["scan", str(shared_data / "broken"), "--model", str(colour_model), "--db", str(db), "--json"])
    assert result.exit_code == 3
    summary = json.loads(result.stdout)
    failed = {item["path"].rsplit("/", 1)[1] for item in summary["failed"]}
    assert failed == {"decord__corrupted.mp4"}
    with sqlite3.connect(db) as conn:
        decoders = dict(conn.execute("select path, decoder from videos where status = 'ok'").fetchall())
    assert decoders[str(shared_data / "broken" / "moviepy__no_duration.webm")] == "pyav"  # decord cannot open it
    assert decoders[str(shared_data / "broken" / "decord__video_90.mov")] == "pyav"


def test_paths_that_look_like_rich_markup_are_printed_as_they_are(runner, colour_model, tmp_path):
    root = tmp_path / "clips [red]"
    root.mkdir()
    (root / "[bold]take.mp4").write_bytes(b"")
    result = runner.invoke(app, ["scan", str(root), "--model", str(colour_model), "--db", str(tmp_path / "t.db")])
    assert result.exit_code == 3, result.output
    assert f"failed {root / '[bold]take.mp4'}: empty file (0 bytes)" in result.stdout
