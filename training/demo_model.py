"""Rebuild the shipped demo model `exports/motion_demo.onnx` from scratch (CPU, a few minutes).

It is a width-reduced C3D (width 0.125, 16x56x56 clips at 10 fps) trained on synthetic videos of
a textured square moving left, right, up or down (`training.motion_data`). It tells which way a
textured patch moves over a static background and nothing else: its labels say so
(`MovingLeft`, ...). It exists so the tagger has a real exported model to run end to end until the
pretrained default is there; it is not an instrument classifier.

    python -m training.demo_model --work runs/motion_demo --out exports/motion_demo.onnx

Steps: generate training videos (seed 0) and held-out videos from other scenes (seed 1), train
with `training.fit` (flip off: a mirror would swap left and right), evaluate the best checkpoint
on the held-out videos, export it with the held-out accuracy in the model card.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer

from tagger.errors import TaggerError, UsageError
from training.checkpoint import export_checkpoint
from training.data import DataConfig
from training.evaluate import evaluate_checkpoint
from training.fit import FitConfig, train_from_configs
from training.motion_data import DIRECTIONS, MotionDataConfig, generate_motion_dataset

TRAIN_DATA = MotionDataConfig(classes=tuple(DIRECTIONS), groups=16, clips_per_group=3, seed=0)
HELDOUT_DATA = MotionDataConfig(classes=tuple(DIRECTIONS), groups=8, clips_per_group=2, seed=1)
CLIP = {"clip_len": 16, "size": (56, 56), "resize": 64, "fps": 10.0, "frame_step": 1}
MODEL = {"width": 0.125, "dropout": 0.2}  # ~0.8 M parameters, ~3.3 MB as ONNX


MARKER = ".made-by-training.demo_model"  # what this command made in --work, so a rerun may replace it
MADE = ("train", "heldout", "run")


def prepare_work(work: Path) -> None:
    """Make `work` ready: new, empty, or made by an earlier run, whose own folders are replaced.
    Never deletes anything this command did not create.

    Raises:
        UsageError: `work` is a file, or a folder holding files of someone else's.
    """
    if work.exists() and not work.is_dir():
        raise UsageError(f"--work {work} is a file: pass a new or empty folder")
    if work.is_dir() and any(work.iterdir()) and not (work / MARKER).is_file():
        raise UsageError(f"--work {work} holds files this command did not create: pass a new or empty folder")
    work.mkdir(parents=True, exist_ok=True)
    (work / MARKER).write_text("training.demo_model made train/, heldout/ and run/ here; a rerun replaces them\n")
    for name in MADE:
        shutil.rmtree(work / name, ignore_errors=True)


def build_demo_model(work: Path, out: Path, epochs: int = 20, workers: int = 1) -> dict:
    """Generate the data, train, evaluate on held-out scenes and export to `out`."""
    prepare_work(work)
    generate_motion_dataset(work / "train", TRAIN_DATA)
    generate_motion_dataset(work / "heldout", HELDOUT_DATA)
    config = FitConfig(out=str(work / "run"), arch="c3d", batch_size=12, epochs=epochs, lr=3e-4,
                       lr_patience=3, train_clips=2, flip=False, workers=workers, seed=0, device="auto",
                       export=False)
    train_from_configs(config, DataConfig(root=str(work / "train"), seed=0), CLIP, MODEL)
    best = work / "run" / "best.pt"
    heldout = evaluate_checkpoint(best, work / "heldout", all_videos=True, clips=5,
                                  workers=workers)
    card = {
        "data": "synthetic: a textured square moving left/right/up/down over a textured "
                "background (training.motion_data), not real footage",
        "purpose": "demo model for running the tagger end to end; detects motion direction only",
        "heldout_videos": heldout["videos"],
        "heldout_clip_accuracy": heldout["clip_accuracy"],
        "heldout_video_accuracy": heldout["video_accuracy"],
        "heldout_macro_f1": heldout["macro_f1"],
        "command": "python -m training.demo_model --work runs/motion_demo "
                   "--out exports/motion_demo.onnx",
    }
    return export_checkpoint(best, out, card=card)


def main(
    work: Annotated[Path, typer.Option(help="scratch folder: new, empty, or an earlier run's (its own files replaced)")] = Path("runs/motion_demo"),
    out: Annotated[Path, typer.Option(help="the ONNX file to write")] = Path(
        "exports/motion_demo.onnx"),
    epochs: Annotated[int, typer.Option(help="maximum epochs")] = 20,
    workers: Annotated[int, typer.Option(help="decoding processes")] = 1,
) -> None:
    """Rebuild the motion demo model.

    Example: python -m training.demo_model --work runs/motion_demo --out exports/motion_demo.onnx
    """
    try:
        report = build_demo_model(work, out, epochs, workers)
    except TaggerError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    typer.echo(f"wrote {report['onnx']} ({report['bytes'] / 1e6:.2f} MB): held-out video accuracy "
               f"{report['train']['heldout_video_accuracy']:.3f} on "
               f"{report['train']['heldout_videos']} videos")


if __name__ == "__main__":
    typer.run(main)
