"""Training checkpoints: what they hold, and how a checkpoint becomes a model, a contract, an ONNX.

A checkpoint is a plain dict of tensors, numbers, strings, lists, tuples and dicts, so
`torch.load(path, weights_only=True)` reads it, and it rebuilds its model without outside
knowledge (nanoGPT style):

    arch, model_config  -> training.models.build_model(arch, model_config)
    model               -> state_dict of that model (no wrapper prefix)
    labels, clip, mean/std (in model_config) -> the tagger contract
    optimizer, scheduler, epoch, best, stale_epochs, history, torch_rng -> `fit --resume`
    data, split, fit    -> how it was trained (DataConfig, the split's file lists, FitConfig)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tagger.contract import ModelContract
from tagger.errors import UsageError
from training.data import ClipSpec, VideoItem, parity_clips
from training.models import VideoModelConfig, build_model

FORMAT = 1  # bump when the layout changes incompatibly
VERSION_DEFAULT = "1"  # tagger.version of an exported model unless the card says otherwise


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write `state` atomically: a run killed mid-save leaves the previous file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": FORMAT, **state}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint with `weights_only=True` (no code runs while loading).

    Raises:
        UsageError: the file is missing or is not a training checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"checkpoint {path} does not exist: pass best.pt or last.pt from a "
                         "`python -m training.fit --out DIR` folder")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for foreign or truncated files
        raise UsageError(f"checkpoint {path} cannot be read ({type(exc).__name__}): pass a "
                         "file written by training.fit") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UsageError(f"{path} is not a training.fit checkpoint (format {FORMAT})")
    return state


def model_from_checkpoint(state: dict[str, Any]) -> tuple[nn.Module, VideoModelConfig]:
    """The model with its trained weights, in eval mode, on the CPU, and its config."""
    model = build_model(state["arch"], state["model_config"])
    model.load_state_dict(state["model"])
    return model.eval(), model.config


def clip_spec_of(state: dict[str, Any]) -> ClipSpec:
    """How the checkpoint's model was fed."""
    clip = dict(state["clip"])
    return ClipSpec(**{**clip, "size": tuple(clip["size"])})


def contract_from_checkpoint(state: dict[str, Any], *, version: str | None = None,
                             threshold: float = 0.5) -> ModelContract:
    """The tagger contract for the checkpoint's model, with its training summary."""
    spec = clip_spec_of(state)
    labels = tuple(state["labels"])
    best = state.get("best", {})
    train = {
        "data": Path(state["data"]["root"]).name,
        "classes": list(labels),
        "split": state["split"]["method"],
        "train_videos": len(state["split"]["train"]),
        "val_videos": len(state["split"]["val"]),
        "epochs": state["epoch"],
        "best_epoch": best.get("epoch"),
        "val_accuracy": best.get("val_accuracy"),
        "val_video_accuracy": best.get("val_video_accuracy"),
        "val_loss": best.get("val_loss"),
    }
    return ModelContract(
        labels=labels, clip_len=spec.clip_len, size=spec.size, resize=spec.resize, fps=spec.fps,
        frame_step=spec.frame_step, crops=spec.crops, thresholds={label: threshold for label in labels},
        output="logits", kind="video", arch=state["arch"],
        version=version or str(state.get("version", VERSION_DEFAULT)), train=train,
    )


def export_checkpoint(path: Path, out_path: Path, *, parity_clips: int = 8,
                      max_mb: float | None = 25.0, card: dict | None = None) -> dict:
    """Export a checkpoint with `export_video_model`, checking parity on its validation videos."""
    from training.export import export_video_model

    state = load_checkpoint(path)
    model, config = model_from_checkpoint(state)
    spec = clip_spec_of(state)
    items = tuple(VideoItem(p, 0, None) for p in state["split"]["val"] if Path(p).is_file())
    frames = parity_clips_or_none(items, spec, parity_clips)
    return export_video_model(model, contract_from_checkpoint(state), Path(out_path),
                              mean=tuple(config.mean), std=tuple(config.std),
                              parity_frames=frames, card=card, max_mb=max_mb)


def parity_clips_or_none(items: tuple[VideoItem, ...], spec: ClipSpec, count: int):
    """Real clips for the parity check, or None (random frames) when no video is at hand."""
    if not items or count < 1:
        return None
    return parity_clips(items, spec, count)
