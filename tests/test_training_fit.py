"""End to end on real (generated) videos: C3D learns motion, a frame-mean model cannot, the export
agrees with torch on every held-out video, and `--resume` continues where training stopped.

The data (`training.motion_data`): a textured square moving left or right over a textured
background, wrapping at the edges, MPEG-4 AVIs at 10/15/25/30 fps with UCF101-style names. A single
frame, or the mean of all frames, says nothing about the direction; only the order of frames does.
Flip augmentation is off (a mirror would swap the classes). Training runs the real CLI in-process.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from typer.testing import CliRunner

from tagger.contract import ModelContract
from training.checkpoint import clip_spec_of, load_checkpoint, model_from_checkpoint
from training.data import ClipDataset, VideoItem
from training.evaluate import app as evaluate_app
from training.evaluate import evaluate_checkpoint
from training.export import UInt8VideoInput
from training.export import app as export_app
from training.fit import app as fit_app
from training.motion_data import MotionDataConfig, generate_motion_dataset

pytestmark = pytest.mark.slow

# Small C3D on 16 x 56 x 56 clips at 10 fps (1.6 s): about a minute of CPU on 2 cores.
RECIPE = ["--width", "0.125", "--size", "56", "--resize", "64", "--fps", "10", "--no-flip",
          "--batch-size", "12", "--lr", "5e-4", "--train-clips", "3", "--val-clips", "3",
          "--workers", "1", "--seed", "0", "--no-export"]


@pytest.fixture(scope="module")
def motion_videos(tmp_path_factory) -> tuple[Path, Path]:
    """(train ROOT, held-out ROOT): 48 training videos from 8 scenes, 40 held-out from 10 others."""
    folder = tmp_path_factory.mktemp("motion")
    generate_motion_dataset(folder / "train", MotionDataConfig(groups=8, clips_per_group=3, seed=0))
    generate_motion_dataset(folder / "heldout",
                            MotionDataConfig(groups=10, clips_per_group=2, seed=1))
    return folder / "train", folder / "heldout"


def _fit(root: Path, out: Path, *args: str) -> str:
    result = CliRunner().invoke(fit_app, [str(root), "--out", str(out), *args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def trained_c3d(motion_videos, tmp_path_factory) -> Path:
    """best.pt of a width-0.125 C3D trained 10 epochs on the motion videos."""
    out = tmp_path_factory.mktemp("c3d")
    _fit(motion_videos[0], out, *RECIPE, "--arch", "c3d", "--dropout", "0.2", "--epochs", "10")
    return out / "best.pt"


def test_c3d_learns_motion_on_videos_it_never_saw(trained_c3d, motion_videos):
    state = load_checkpoint(trained_c3d)
    train_groups = {Path(p).stem.split("_")[2] for p in state["split"]["train"]}
    val_groups = {Path(p).stem.split("_")[2] for p in state["split"]["val"]}
    assert state["split"]["method"] == "group" and not train_groups & val_groups
    report = evaluate_checkpoint(trained_c3d, motion_videos[1], all_videos=True, workers=1)
    assert report["videos"] == 40
    assert report["video_accuracy"] >= 0.9, report
    assert report["macro_f1"] >= 0.9
    for name in ("best.evaluation.json", "best.confusion.json", "best.confusion.png",
                 "curves.png"):
        assert (trained_c3d.parent / name).stat().st_size > 0
    confusion = json.loads((trained_c3d.parent / "best.confusion.json").read_text())
    assert np.sum(confusion["matrix"]) == 40


def test_frame_mean_baseline_stays_near_chance(motion_videos, tmp_path):
    """Same data, same recipe, but the model averages the frames: it must not beat chance."""
    _fit(motion_videos[0], tmp_path, *RECIPE, "--arch", "framemean", "--width", "0.5",
         "--epochs", "10")
    report = evaluate_checkpoint(tmp_path / "best.pt", motion_videos[1], all_videos=True,
                                 workers=1)
    assert report["videos"] == 40
    assert report["video_accuracy"] <= 0.7, report  # chance is 0.5; 0.7 is ~2.5 sigma above


def test_evaluate_cli_prints_the_scores(trained_c3d, motion_videos):
    result = CliRunner().invoke(evaluate_app, [str(trained_c3d), str(motion_videos[0]),
                                               "--workers", "1", "--clips", "2"])
    assert result.exit_code == 0, result.output
    assert "video accuracy" in result.output and "MovingLeft" in result.output
    assert (f"wrote best.evaluation.json, best.confusion.json, best.confusion.png, curves.png in "
            f"{trained_c3d.parent}") in " ".join(result.output.split())


def _video_scores(score, items, spec) -> list[int]:
    """Top-1 per video from the mean of 5 uniform clips' probabilities."""
    dataset = ClipDataset(items, spec, train=False, clips_per_video=5)
    tops = []
    for video in range(len(items)):
        clips = np.stack([dataset[video * 5 + clip][0].numpy() for clip in range(5)])
        logits = score(clips)  # (5, K)
        probs = np.exp(logits - logits.max(1, keepdims=True))
        tops.append(int((probs / probs.sum(1, keepdims=True)).mean(0).argmax()))
    return tops


def test_export_agrees_with_torch_on_every_held_out_video(trained_c3d, motion_videos, tmp_path):
    result = CliRunner().invoke(export_app, [str(trained_c3d), "--name", "motion", "--out",
                                             str(tmp_path)])
    assert result.exit_code == 0, result.output
    graph = onnx.load(str(tmp_path / "motion.onnx"))
    onnx.checker.check_model(graph, full_check=True)
    contract = ModelContract.from_metadata({p.key: p.value for p in graph.metadata_props})
    assert contract.labels == ("MovingLeft", "MovingRight")
    assert (contract.clip_len, contract.size, contract.resize) == (16, (56, 56), 64)
    assert (contract.fps, contract.frame_step, contract.arch) == (10.0, 1, "c3d")
    assert contract.train["parity_input"] == "real" and contract.train["parity_max_abs_diff"] < 1e-3
    card = json.loads((tmp_path / "motion.json").read_text())
    assert card["sha256"] and card["train"]["split"] == "group"

    state = load_checkpoint(trained_c3d)
    model, config = model_from_checkpoint(state)
    wrapper = UInt8VideoInput(model, config.mean, config.std).eval()
    session = ort.InferenceSession(str(tmp_path / "motion.onnx"),
                                   providers=["CPUExecutionProvider"])
    folder = motion_videos[1]
    items = tuple(VideoItem(str(p), 0, None) for p in sorted(folder.rglob("*.avi")))
    with torch.no_grad():
        torch_top = _video_scores(lambda c: wrapper(torch.from_numpy(c)).numpy(), items,
                                  clip_spec_of(state))
    onnx_top = _video_scores(lambda c: session.run(["logits"], {"frames": c})[0], items,
                             clip_spec_of(state))
    assert len(onnx_top) == 40 and onnx_top == torch_top


def test_resume_continues_from_the_last_epoch(motion_videos, tmp_path):
    """Two epochs then `--resume` to three gives the same history as three epochs at once."""
    quick = [*RECIPE, "--arch", "framemean", "--width", "0.25", "--train-clips", "1"]
    _fit(motion_videos[0], tmp_path / "straight", *quick, "--epochs", "3")
    _fit(motion_videos[0], tmp_path / "resumed", *quick, "--epochs", "2")
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["epoch"] == 2
    output = _fit(motion_videos[0], tmp_path / "resumed", "--resume", "--epochs", "3",
                  "--workers", "1", "--no-export")
    assert "resuming" in output and "after epoch 2" in output
    resumed = load_checkpoint(tmp_path / "resumed" / "last.pt")
    straight = load_checkpoint(tmp_path / "straight" / "last.pt")
    assert resumed["epoch"] == 3 and [r["epoch"] for r in resumed["history"]] == [1, 2, 3]
    for a, b in zip(resumed["history"], straight["history"]):
        for key in ("train_loss", "val_loss", "val_accuracy", "lr"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), (key, a, b)
    for name, tensor in straight["model"].items():
        assert torch.allclose(resumed["model"][name].float(), tensor.float(), atol=1e-5), name


def test_resume_without_a_checkpoint_is_a_usage_error(motion_videos, tmp_path):
    result = CliRunner().invoke(fit_app, [str(motion_videos[0]), "--out", str(tmp_path),
                                          "--resume"])
    assert result.exit_code == 2
    assert result.stderr == (f"Error: checkpoint {tmp_path / 'last.pt'} does not exist: pass "
                             "best.pt or last.pt from a `python -m training.fit --out DIR` "
                             "folder\n")
