"""The default model's recipe end to end on a generated corpus: `python -m training.fit --arch
crop-head` trains, calibrates and exports without a network, and `tagger scan` runs the result."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from synthetic import write_video

COLOURS = {"PlayingSitar": (200, 40, 40), "PlayingTabla": (40, 60, 200), "NoInstrument": (90, 160, 90)}


def write_photo(path: Path, colour: tuple[int, int, int], seed: int) -> None:
    """A 160x120 JPEG of `colour` with noise, written by PyAV's image2 muxer."""
    rng = np.random.default_rng(seed)
    image = np.clip(np.array(colour) + rng.normal(0, 25, (120, 160, 3)), 0, 255).astype(np.uint8)
    with av.open(str(path), "w", format="image2") as container:
        stream = container.add_stream("mjpeg")
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuvj420p"
        container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))


@pytest.fixture(scope="module")
def coloured_corpus(tmp_path_factory) -> Path:
    """12 photos per label, each its own group, listed in a MANIFEST.tsv like the real corpus's."""
    root = tmp_path_factory.mktemp("corpus")
    rows = ["file\tlabel\tkind\tgroup\tnotes"]
    for label, colour in COLOURS.items():
        (root / "images" / label).mkdir(parents=True)
        for i in range(12):
            name = f"images/{label}/{label.lower()}-{i:02d}.jpg"
            write_photo(root / name, colour, seed=i)
            rows.append(f"{name}\t{label}\timage\t{label}-{i}\tgenerated")
    (root / "MANIFEST.tsv").write_text("\n".join(rows) + "\n")
    return root


def offline(command: list[str]) -> list[str]:
    """`command` in a network namespace with no interface up, where this machine allows it."""
    if shutil.which("unshare") and os.geteuid() == 0 and subprocess.run(
            ["unshare", "--net", "true"], capture_output=True).returncode == 0:
        return ["unshare", "--net", *command]
    if os.environ.get("CI"):
        pytest.fail("CI must be able to cut the network off (unshare --net as root)")
    pytest.skip("needs unshare and root to cut the network off")


@pytest.mark.slow
def test_crop_head_recipe_trains_offline_and_its_model_tags_a_scan(coloured_corpus, tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "run"
    done = subprocess.run(offline([sys.executable, "-m", "training.fit", str(coloured_corpus), "--arch", "crop-head",
                                   "--out", str(out)]), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    card = json.loads((out / "default.json").read_text())
    assert card["labels"] == ["PlayingSitar", "PlayingTabla", "NoInstrument"]
    assert card["input"]["shape"][1] == 12  # 4 frames x 3 crops
    assert card["int8"]["files_whose_tags_changed"] == []
    held_out = card["train"]["measured_torch"]["test_groups"]
    assert held_out["players_with_their_label"] == 1.0 and held_out["no_instrument_with_any_tag"] == 0.0

    video = write_video(tmp_path / "red.mp4", 5, size=(320, 180), colour_at=lambda t: COLOURS["PlayingSitar"])
    db = tmp_path / "tags.db"
    scan = subprocess.run(offline([sys.executable, "-m", "tagger.cli", "scan", str(video), "--db", str(db),
                                   "--model", str(out / "default.onnx"), "--json"]),
                          capture_output=True, text=True, timeout=300)
    assert scan.returncode == 0, scan.stderr
    with sqlite3.connect(db) as conn:
        labels = {row[0] for row in conn.execute("select label from segments")}
    assert labels == {"PlayingSitar"}


def test_crop_head_needs_a_manifest(tmp_path):
    pytest.importorskip("torch")
    (tmp_path / "PlayingSitar").mkdir()
    done = subprocess.run([sys.executable, "-m", "training.fit", str(tmp_path), "--arch", "crop-head", "--out",
                           str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == (f"Error: {tmp_path} has no MANIFEST.tsv: --arch crop-head trains on a corpus "
                                   "like ../shared/data/corpus (columns file, label, kind, group)")


def test_a_corpus_label_without_a_class_is_one_line(tmp_path):
    pytest.importorskip("torch")
    (tmp_path / "MANIFEST.tsv").write_text("file\tlabel\tkind\tgroup\nimages/a.jpg\tPlayingKazoo\timage\tg1\n")
    done = subprocess.run([sys.executable, "-m", "training.fit", str(tmp_path), "--arch", "crop-head", "--out",
                           str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == (f"Error: {tmp_path / 'MANIFEST.tsv'} line 2: label 'PlayingKazoo' has no place in "
                                   "the default model's classes: add it to training.corpus.LABEL_POLICY")


def test_a_wide_shot_pastes_the_photo_small_at_one_side_over_the_background():
    pytest.importorskip("torch")
    from training.frame_features import WideShot, wide_shot

    subject = np.full((100, 80, 3), 250, np.uint8)  # a bright 4:5 photo
    background = np.zeros((300, 400, 3), np.uint8)  # a dark 4:3 photo, scaled to cover 398x224
    frame = wide_shot(subject, background, WideShot(Path("bg.jpg"), 0.5, "right"), 224)
    assert frame.shape == (224, 398, 3)
    bright = np.argwhere(frame[:, :, 0] > 128)
    (top, left), (bottom, right) = bright.min(axis=0), bright.max(axis=0)
    assert (bottom - top + 1, right - left + 1) == (112, 90)  # half the height, aspect kept
    assert right == 397 and top == (224 - 112) // 2  # at the right edge, centred vertically


def test_thresholds_let_at_most_the_allowed_share_of_negatives_through():
    from training.calibrate import ThresholdRule, choose_threshold, thresholds_for

    negatives = np.array([0.9, 0.6001, *[0.1] * 98])  # 1% of 100 may reach the threshold: 0.9 only
    assert choose_threshold(negatives, ThresholdRule(floor=0.5)) == pytest.approx(0.6001, abs=1e-6)
    chosen = thresholds_for(negatives[:, None], ["PlayingSitar"], ["NoInstrument"] * 100, ["PlayingSitar"],
                            ThresholdRule(floor=0.5))["PlayingSitar"]
    assert chosen == 0.601 and (negatives >= chosen).sum() == 1  # rounded up: 0.6 would let 0.6001 through
    assert choose_threshold(np.full(10, 0.01), ThresholdRule(floor=0.5)) == 0.5  # never below the floor


def test_a_split_keeps_one_file_or_source_on_one_side(tmp_path):
    from training.corpus import read_manifest

    rows = ["file\tlabel\tkind\tgroup\tsource_repo\tsource_path\tsha256"]
    for name, group, repo, path, sha in [("a.jpg", "intel-car", "intel/videos", "car.mp4", "1"),
                                         ("b.jpg", "intel:car", "intel/videos", "car.mp4", "2"),
                                         ("c.jpg", "shoot-c", "x/y", "c.jpg", "3"),
                                         ("d.jpg", "shoot-d", "x/y", "d.jpg", "3")]:
        (tmp_path / name).write_bytes(b"x")
        rows.append(f"{name}\tNoInstrument\timage\t{group}\t{repo}\t{path}\t{sha}")
    (tmp_path / "MANIFEST.tsv").write_text("\n".join(rows) + "\n")
    items, missing = read_manifest(tmp_path)
    groups = {item.path.name: item.split_group for item in items}
    assert missing == [] and groups == {"a.jpg": "intel-car", "b.jpg": "intel-car", "c.jpg": "shoot-c",
                                        "d.jpg": "shoot-c"}
    assert items[0].in_test_split == items[1].in_test_split


def test_shared_clips_that_are_corpus_files_do_not_calibrate(shared_data):
    pytest.importorskip("torch")
    from training.build_default import shared_clips
    from training.corpus import read_manifest

    if not (shared_data / "corpus" / "MANIFEST.tsv").is_file():
        pytest.skip(f"the corpus is not at {shared_data / 'corpus'}")
    names = {path.name for path, _ in shared_clips(shared_data, read_manifest(shared_data / "corpus")[0])}
    assert "android-demo-app__TorchVideo_video2.mp4" not in names  # the iOS demo's video2, a corpus file
    assert len(names) == 16


ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("command, code, message", [
    (["bench/eval_default.py", "--corpus", "/no/corpus"], 2,
     "Error: --corpus /no/corpus has no MANIFEST.tsv: pass the corpus folder (../shared/data/corpus)"),
    (["bench/eval_default.py", "--model", "/no/model.onnx"], 4,
     "Error: model not found: /no/model.onnx (pass --model PATH or set TAGGER_MODEL)"),
    (["bench/off_centre.py", "--corpus", "/no/corpus"], 2,
     "Error: /no/corpus has no MANIFEST.tsv: the corpus lists its files there (tab-separated columns file, label, "
     "kind, group)"),
    (["bench/off_centre.py", "--scales", "abc"], 2,
     "off_centre.py: error: argument --scales: 'abc' is not a comma-separated list of numbers in (0, 1], e.g. 1.0,0.6"),
    (["-m", "training.build_default", "--bogus"], 2,
     "python -m training.build_default: error: unrecognized arguments: --bogus"),
])
def test_the_model_benches_and_build_say_what_is_wrong_in_one_line(command, code, message):
    if command[0] == "-m":
        pytest.importorskip("torch")
    done = subprocess.run([sys.executable, *command], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == code
    assert done.stderr.strip().splitlines()[-1] == message
