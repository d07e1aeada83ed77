"""The default model's recipe end to end on a generated corpus: `python -m training.fit --arch
frame-head` extracts, chooses, fits and exports without a network, and `tagger scan` runs the result;
and the pieces of the recipe (thresholds, splits, labels, the appended graph) one by one."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from synthetic import write_video

COLOURS = {"PlayingSitar": (200, 40, 40), "PlayingTabla": (40, 60, 200), "NoInstrument": (90, 160, 90)}


@pytest.fixture(scope="module")
def coloured_corpus(tmp_path_factory) -> Path:
    """10 short videos per label, each its own group, listed in a MANIFEST.tsv like the video corpus's."""
    root = tmp_path_factory.mktemp("corpus")
    rows = ["file\tlabel\tkind\tgroup\tnotes"]
    for label, colour in COLOURS.items():
        (root / "videos" / label).mkdir(parents=True)
        for i in range(10):
            name = f"videos/{label}/{label.lower()}-{i:02d}.mp4"
            shade = tuple(int(c) for c in np.clip(np.array(colour) + (i - 5) * 6, 0, 255))
            write_video(root / name, 4, size=(288, 224), colour_at=lambda t, shade=shade: shade)
            rows.append(f"{name}\t{label}\tvideo\t{label}-{i}\tgenerated")
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
def test_frame_head_recipe_trains_offline_and_its_model_tags_a_scan(coloured_corpus, tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "run"
    done = subprocess.run(offline([sys.executable, "-m", "training.fit", str(coloured_corpus), "--arch", "frame-head",
                                   "--out", str(out)]), capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    card = json.loads((out / "default.json").read_text())
    assert card["feature_space"].startswith("lite0-v3-") and set(card["thresholds"]) >= {"PlayingSitar", "PlayingTabla"}
    held_out = card["measured"]["out_of_fold_vision"]  # every fit video scored by heads fitted without its group
    sitar = held_out["labels"]["PlayingSitar"]
    in_test = card["measured"]["test_split_videos_fused"]["labels"]["PlayingSitar"]["videos"]
    assert sitar["videos"] + in_test == 10 and sitar["tagged"] >= sitar["videos"] - 1 and sitar["wrong"] == 0
    assert held_out["no_instrument_videos_tagged"] == 0

    video = write_video(tmp_path / "red.mp4", 5, size=(320, 180), colour_at=lambda t: COLOURS["PlayingSitar"])
    db = tmp_path / "tags.db"
    scan = subprocess.run(offline([sys.executable, "-m", "tagger.cli", "scan", str(video), "--db", str(db),
                                   "--model", str(out / "default.onnx"), "--json"]),
                          capture_output=True, text=True, timeout=300)
    assert scan.returncode == 0, scan.stderr
    assert json.loads(scan.stdout)["audio_model"].endswith("default_audio.onnx")  # named by the vision model
    with sqlite3.connect(db) as conn:
        labels = {row[0] for row in conn.execute("select label from segments")}
        stored = conn.execute("select count(*) from windows where features is not null").fetchone()[0]
    assert labels == {"PlayingSitar"} and stored >= 2  # vision and sound windows keep their features


def test_frame_head_needs_a_manifest(tmp_path):
    pytest.importorskip("torch")
    (tmp_path / "PlayingSitar").mkdir()
    done = subprocess.run([sys.executable, "-m", "training.fit", str(tmp_path), "--arch", "frame-head", "--out",
                           str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == (f"Error: {tmp_path} has no MANIFEST.tsv: --arch frame-head trains on a corpus "
                                   "like training/corpus_videos.tsv describes (columns file, label, kind, group)")


def test_a_corpus_label_without_a_class_is_one_line(tmp_path):
    pytest.importorskip("torch")
    (tmp_path / "MANIFEST.tsv").write_text("file\tlabel\tkind\tgroup\nimages/a.jpg\tPlayingKazoo\timage\tg1\n")
    done = subprocess.run([sys.executable, "-m", "training.fit", str(tmp_path), "--arch", "frame-head", "--out",
                           str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == (f"Error: {tmp_path / 'MANIFEST.tsv'} line 2: label 'PlayingKazoo' has no place in "
                                   "the default model's classes: add it to training.tags.CORPUS_LABELS")


def test_labels_teach_their_tags_and_look_alikes_are_not_counted():
    from training.tags import targets

    tags = ("PlayingGuitar", "PlayingSitar", "Drumming")
    assert targets("PlayingBassGuitar", (), tags) == [1, 0, 0]  # a bass guitar is a guitar
    assert targets("PlayingUkulele", (), tags) == [-1, 0, 0]  # neither teaches nor forbids guitar; never a sitar
    assert targets("PlayingBongo", (), tags) == [0, 0, 1]  # hand drums played are drumming
    assert targets("NoInstrument", ("PlayingGuitar",), tags) == [1, 0, 0]  # "also: PlayingGuitar" in the notes


def test_video_tables_count_each_video_once_per_tag():
    from training.video_eval import Truth, video_table

    tags = ("PlayingGuitar", "PlayingSitar")
    truths = [Truth("g.mp4", "PlayingGuitar", (1, 0)), Truth("u.mp4", "PlayingUkulele", (-1, 0)),
              Truth("n.mp4", "NoInstrument", (0, 0))]
    best = np.array([[0.9, 0.7], [0.8, 0.1], [0.2, 0.1]])  # guitar also read as sitar; the ukulele as guitar
    table = video_table(best, truths, tags, {"PlayingGuitar": 0.5, "PlayingSitar": 0.6})
    assert table["labels"]["PlayingGuitar"] == {"videos": 1, "tagged": 1, "wrong": 0, "also_tagged": {"PlayingSitar": 1}}
    assert table["labels"]["PlayingSitar"]["wrong"] == 1 and table["videos_with_a_wrong_tag"] == 1
    assert table["instrument_videos_tagged"] == 1 and table["no_instrument_videos_tagged"] == 0


def test_the_appended_graph_computes_what_training_computes(tmp_path):
    """features and probs of the appended ONNX nodes equal `features_from_parts` and the head in numpy."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from training.assemble import append_head, features_from_parts
    from training.frame_head import head_scores
    from training.frame_net import Projection

    rng = np.random.default_rng(0)
    parts_graph = tmp_path / "parts.onnx"  # a stand-in backbone: parts = the input itself
    graph = helper.make_graph([helper.make_node("Identity", ["frames"], ["parts"])], "parts",
                              [helper.make_tensor_value_info("frames", TensorProto.FLOAT, ["N", 2578])],
                              [helper.make_tensor_value_info("parts", TensorProto.FLOAT, ["N", 2578])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(parts_graph))
    projection = Projection(rng.normal(size=2560).astype(np.float32), rng.normal(size=(2560, 16)).astype(np.float32) * 0.02)
    weights, bias = rng.normal(size=(3, 34)).astype(np.float32) * 0.1, rng.normal(size=3).astype(np.float32)
    append_head(parts_graph, tmp_path / "model.onnx", projection, weights, bias, {"tagger.note": "test"})
    parts = np.concatenate([rng.random((5, 2560)), rng.random((5, 18)) * 0.1], axis=1).astype(np.float32)
    parts[0, 2560] = 0.0  # a prior of 0: the log is taken at the floor, in both
    probs, features = ort.InferenceSession(str(tmp_path / "model.onnx")).run(["probs", "features"], {"frames": parts})
    expected = features_from_parts(parts, projection)
    assert np.allclose(features, expected, atol=1e-4) and np.allclose(probs, head_scores(expected, weights, bias), atol=1e-5)


def test_the_projection_gives_windows_it_never_saw_values_of_the_examples_size():
    # 12 examples span 11 directions: the other components must not scale rounding noise up
    pytest.importorskip("torch")
    from training.frame_net import Projection

    rng = np.random.default_rng(1)
    seen = rng.normal(size=(12, 2560)).astype(np.float32)
    projection = Projection.fit(seen, 32)
    unseen = (rng.normal(size=(5, 2560)).astype(np.float32) - projection.mean) @ projection.matrix
    assert np.allclose(((seen - projection.mean) @ projection.matrix)[:, :11].std(axis=0, ddof=1), 1, atol=1e-3)
    assert np.abs(projection.matrix[:, 11:]).max() == 0 and np.abs(unseen).max() < 10


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


ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("command, code, message", [
    (["bench/eval_default.py", "--manifest", "/no/manifest.tsv"], 2,
     "Error: no manifest at /no/manifest.tsv: pass --manifest FILE"),
    (["bench/eval_default.py", "--model", "x=/no/model.onnx"], 2, "Error: --model x: /no/model.onnx not found"),
    (["-m", "training.build_default", "--bogus"], 2,
     "python -m training.build_default: error: unrecognized arguments: --bogus"),
    (["-m", "training.build_default", "--videos", "/no/videos"], 2,
     "Error: --videos /no/videos not found: rebuild the corpus with python -m training.video_corpus build DIR"),
    (["-m", "training.video_corpus", "counts", "/tmp", "--manifest", "/no/m.tsv"], 2,
     "Error: no manifest at /no/m.tsv: pass --manifest FILE"),
])
def test_the_model_benches_and_build_say_what_is_wrong_in_one_line(command, code, message):
    if command[0] == "-m":
        pytest.importorskip("torch")
    done = subprocess.run([sys.executable, *command], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == code
    assert done.stderr.strip().splitlines()[-1] == message


def _eval_default(monkeypatch, tmp_path):
    """bench/eval_default.py as a module, its scan databases under tmp_path."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("eval_default_under_test", ROOT / "bench" / "eval_default.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "EVAL_DIR", tmp_path / "eval")
    return module


def test_the_gate_refuses_scans_that_measured_nothing(monkeypatch, tmp_path, colour_model):
    from synthetic import BLUE, RED, solid

    gate = _eval_default(monkeypatch, tmp_path)
    red = write_video(tmp_path / "red.avi", 3, colour_at=solid(RED))
    black = write_video(tmp_path / "black.avi", 3, colour_at=solid((0, 0, 0)))
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all" * 100)

    def held_out(*paths):
        return [gate.Labelled(Path(p), frozenset({"Red"}), frozenset(), False) for p in paths]

    assert gate.scan_tags("m", colour_model, None, held_out(red, black)) == {red: {"Red"}, black: set()}
    with pytest.raises(gate.Unmeasured, match=r"^m: tagged none of the 1 held-out videos, so nothing was measured"):
        gate.scan_tags("m", colour_model, None, held_out(black))
    with pytest.raises(gate.Unmeasured, match=rf"^m: 1 of 2 held-out videos failed to scan \(first: {broken}: "):
        gate.scan_tags("m", colour_model, None, held_out(red, broken))
    with pytest.raises(gate.Unmeasured, match=r"^m: 1 of 2 held-out videos are not on disk \(first: .*gone.avi\)"):
        gate.scan_tags("m", colour_model, None, held_out(red, tmp_path / "gone.avi"))
    blue = write_video(tmp_path / "blue.avi", 3, colour_at=solid(BLUE))
    videos = held_out(blue, red)
    table = gate.label_table(videos, gate.scan_tags("m", colour_model, None, videos))
    assert table["labels"]["Red"] == {"videos": 2, "tagged": 1, "wrong": 0, "wrong_on": []}
