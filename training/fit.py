"""Train a video classifier: `python -m training.fit ROOT --out DIR`.

The recipe follows the original work: batch 20, up to 50 epochs, Adam at lr 1e-3,
ReduceLROnPlateau on the validation loss, cross-entropy, early stopping when the validation loss
stops improving, and the best checkpoint kept on validation accuracy. Every flag overrides one
default. DIR gets `last.pt` (every epoch, for `--resume`), `best.pt`, `history.json` and, unless
`--no-export`, the ONNX model exported from `best.pt`.

    python -m training.fit data/UCF-101 --out runs/ucf10 --split-dir data/ucfTrainTestlist \\
        --classes PlayingCello,PlayingDaf --width 0.25
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from torch import nn
from torch.utils.data import DataLoader, Sampler

from tagger.errors import TaggerError, UsageError
from training.checkpoint import export_checkpoint, load_checkpoint, save_checkpoint
from training.data import ClipDataset, ClipSpec, DataConfig, DatasetError, make_split, parse_classes, worker_context
from training.export import UInt8VideoInput
from training.models import build_model, count_parameters, make_config

console = Console(stderr=True)


@dataclass(frozen=True)
class FitConfig:
    """The training recipe (defaults: the original work's)."""

    out: str  # run folder: checkpoints, history, exported model
    arch: str = "c3d"  # any name in training.models' registry
    batch_size: int = 20  # original work
    epochs: int = 50  # upper bound; early stopping usually ends sooner
    lr: float = 1e-3  # Adam, original work
    weight_decay: float = 0.0  # Adam's default
    lr_patience: int = 4  # ReduceLROnPlateau: epochs without a lower val loss before lr drops
    lr_factor: float = 0.1  # ReduceLROnPlateau's default
    patience: int = 10  # early stopping: epochs without a lower val loss before training ends
    train_clips: int = 1  # random clips per training video per epoch
    val_clips: int = 3  # uniform clips per validation video (scores averaged per video)
    flip: bool = True  # horizontal flip; switch off when left/right carries the class
    workers: int = 2  # DataLoader processes that decode
    seed: int = 0  # weights, clip sampling and shuffling
    device: str = "auto"  # auto: CUDA when present
    export: bool = True  # export best.pt to ONNX at the end
    export_name: str | None = None  # NAME.onnx in the run folder; default: the folder's name


class EpochShuffle(Sampler[int]):
    """A shuffle that depends on (seed, epoch) only, so `--resume` replays the same order."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        return iter(np.random.default_rng([self.seed, self.epoch]).permutation(self.size).tolist())

    def __len__(self) -> int:
        return self.size


def pick_device(name: str) -> torch.device:
    """`auto` gives CUDA when present; asking for CUDA without it is an error, not a fallback."""
    if name not in ("auto", "cpu", "cuda"):
        raise UsageError(f"--device {name!r} is not one of auto, cpu, cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda but CUDA is not available: use --device auto or cpu")
    return torch.device("cuda" if name != "cpu" and torch.cuda.is_available() else "cpu")


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), console=console)


def train_one_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                    criterion: nn.Module, device: torch.device, label: str = "train",
                    progress: Progress | None = None) -> dict[str, float]:
    """One pass over `loader`; returns mean loss and clip accuracy."""
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    task = progress.add_task(label, total=len(loader), stats="") if progress else None
    for frames, labels, _ in loader:
        frames, labels = frames.to(device, non_blocking=True), labels.to(device)  # (N, T, H, W, 3)
        logits = model(frames)  # (N, K)
        loss = criterion(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * len(labels)
        correct += (logits.argmax(1) == labels).sum().item()
        seen += len(labels)
        if progress:
            progress.update(task, advance=1,
                            stats=f"loss {total_loss / seen:.4f} acc {correct / seen:.3f}")
    return {"loss": total_loss / max(1, seen), "accuracy": correct / max(1, seen)}


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, criterion: nn.Module, device: torch.device,
             label: str = "val", progress: Progress | None = None) -> dict[str, Any]:
    """Scores every clip of `loader`; video scores are the mean of a video's clip probabilities.

    Returns:
        loss, accuracy (clips), video_accuracy, and the arrays clip_probs `(C, K)`, clip_labels,
        clip_videos, video_probs `(V, K)`, video_labels (videos in order of first appearance).
    """
    model.eval()
    probs, labels_seen, videos_seen, total_loss = [], [], [], 0.0
    task = progress.add_task(label, total=len(loader), stats="") if progress else None
    for frames, labels, videos in loader:
        logits = model(frames.to(device, non_blocking=True))  # (N, K)
        total_loss += criterion(logits, labels.to(device)).item() * len(labels)
        probs.append(torch.softmax(logits, 1).cpu().numpy())
        labels_seen.append(labels.numpy())
        videos_seen.append(videos.numpy())
        if progress:
            progress.update(task, advance=1)
    clip_probs, clip_labels = np.concatenate(probs), np.concatenate(labels_seen)
    clip_videos = np.concatenate(videos_seen)
    order = list(dict.fromkeys(clip_videos.tolist()))
    video_probs = np.stack([clip_probs[clip_videos == v].mean(0) for v in order])  # (V, K)
    video_labels = np.array([clip_labels[clip_videos == v][0] for v in order])
    result = {
        "loss": total_loss / len(clip_labels),
        "accuracy": float(np.mean(clip_probs.argmax(1) == clip_labels)),
        "video_accuracy": float(np.mean(video_probs.argmax(1) == video_labels)),
        "clip_probs": clip_probs, "clip_labels": clip_labels, "clip_videos": clip_videos,
        "video_probs": video_probs, "video_labels": video_labels,
    }
    if progress:
        progress.update(task, stats=f"loss {result['loss']:.4f} acc {result['accuracy']:.3f} "
                                    f"video acc {result['video_accuracy']:.3f}")
    return result


def fit(model: nn.Module, train_loader: DataLoader, val_loader: DataLoader,
        optimizer: torch.optim.Optimizer, scheduler: Any, criterion: nn.Module,
        device: torch.device, out: Path, *, epochs: int, patience: int,
        state: dict[str, Any]) -> dict[str, Any]:
    """Train until `epochs` or early stopping; write last.pt every epoch, best.pt on a new best.

    Args:
        model: the uint8-input wrapper (`UInt8VideoInput`) around the architecture.
        state: the checkpoint so far: static fields (arch, config, labels, data, ...) and, when
            resuming, epoch/best/stale_epochs/history. Updated in place and returned.
    """
    history = state.setdefault("history", [])
    best = state.setdefault("best", {"val_accuracy": -1.0})
    best_loss = min((h["val_loss"] for h in history), default=float("inf"))
    for epoch in range(state.get("epoch", 0) + 1, epochs + 1):
        if state.get("stale_epochs", 0) >= patience:
            console.print(f"early stop: no lower validation loss for {patience} epochs")
            break
        train_loader.dataset.set_epoch(epoch)
        train_loader.sampler.set_epoch(epoch)
        started = time.time()
        with _progress() as progress:
            train = train_one_epoch(model, train_loader, optimizer, criterion, device,
                                    f"epoch {epoch}/{epochs} train", progress)
            val = evaluate(model, val_loader, criterion, device, f"epoch {epoch}/{epochs} val",
                           progress)
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step(val["loss"])
        row = {"epoch": epoch, "lr": lr, "train_loss": train["loss"],
               "train_accuracy": train["accuracy"], "val_loss": val["loss"],
               "val_accuracy": val["accuracy"], "val_video_accuracy": val["video_accuracy"],
               "seconds": round(time.time() - started, 2)}
        history.append(row)
        state["stale_epochs"] = 0 if val["loss"] < best_loss else state.get("stale_epochs", 0) + 1
        best_loss = min(best_loss, val["loss"])
        state.update(epoch=epoch, model=model.model.state_dict(), optimizer=optimizer.state_dict(),
                     scheduler=scheduler.state_dict(), torch_rng=torch.get_rng_state())
        improved = val["accuracy"] > best["val_accuracy"]
        if improved:
            best.update(epoch=epoch, val_accuracy=val["accuracy"],
                        val_video_accuracy=val["video_accuracy"], val_loss=val["loss"])
            save_checkpoint(out / "best.pt", state)
        save_checkpoint(out / "last.pt", state)
        (out / "history.json").write_text(json.dumps(history, indent=2) + "\n")
        console.print(f"epoch {epoch}: train loss {train['loss']:.4f} acc {train['accuracy']:.3f}"
                      f" | val loss {val['loss']:.4f} acc {val['accuracy']:.3f} video acc "
                      f"{val['video_accuracy']:.3f}{' (best)' if improved else ''}")
    return state


def train_from_configs(config: FitConfig, data: DataConfig, clip: dict[str, Any],
                       model_options: dict[str, Any], resume: bool = False) -> dict[str, Any]:
    """Build data, model, optimizer and scheduler from the configs, run `fit`, export.

    `clip` holds clip_len/size/resize (None: the arch's default) and fps/frame_step.
    With `resume`, every setting comes from OUT/last.pt except epochs, patience, workers,
    device and export.
    """
    out = Path(config.out)
    state: dict[str, Any] = {}
    if resume:
        state = load_checkpoint(out / "last.pt")
        stored = FitConfig(**state["fit"])
        config = dataclasses.replace(stored, epochs=config.epochs, patience=config.patience,
                                     workers=config.workers, device=config.device,
                                     export=config.export, export_name=config.export_name)
        data = DataConfig(**{**state["data"], "classes": _tuple(state["data"]["classes"]),
                             "root": data.root})  # the dataset may have moved
    split = make_split(data)
    for note in split.warnings:
        console.print(note, style="yellow", markup=False)
    device = pick_device(config.device)
    torch.manual_seed(config.seed)
    if resume:
        model_config = make_config(state["arch"], state["model_config"])
    else:
        model_config = make_config(config.arch, {**model_options, "num_classes": len(split.classes),
                                                 "clip_len": clip.get("clip_len"),
                                                 "size": clip.get("size"),
                                                 "resize": clip.get("resize")})
    spec = ClipSpec(clip_len=model_config.clip_len, size=tuple(model_config.size),
                    resize=model_config.resize, fps=clip.get("fps") or ClipSpec.fps,
                    frame_step=clip.get("frame_step") or ClipSpec.frame_step)
    if resume:
        spec = ClipSpec(**{**state["clip"], "size": tuple(state["clip"]["size"])})
    net = build_model(config.arch, model_config)
    model = UInt8VideoInput(net, tuple(model_config.mean), tuple(model_config.std)).to(device)
    train_set = ClipDataset(split.train, spec, train=True, clips_per_video=config.train_clips,
                            flip=config.flip, seed=config.seed)
    val_set = ClipDataset(split.val, spec, train=False, clips_per_video=config.val_clips)
    # Workers are not persistent: each epoch's workers must see the dataset's new epoch, or every
    # epoch would draw the same "random" clips.
    loader_options = {"batch_size": config.batch_size, "num_workers": config.workers,
                      "pin_memory": device.type == "cuda", "multiprocessing_context": worker_context(config.workers)}
    train_loader = DataLoader(train_set, sampler=EpochShuffle(len(train_set), config.seed),
                              drop_last=len(train_set) > config.batch_size, **loader_options)
    val_loader = DataLoader(val_set, shuffle=False, **loader_options)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=config.lr_factor, patience=config.lr_patience)
    if resume:
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        console.print(f"resuming {out / 'last.pt'} after epoch {state['epoch']}")
    state.update(arch=config.arch, model_config=dataclasses.asdict(model_config),
                 labels=list(split.classes), clip=dataclasses.asdict(spec),
                 data=dataclasses.asdict(data), fit=dataclasses.asdict(config),
                 split={"method": split.method, "train": [i.path for i in split.train],
                        "val": [i.path for i in split.val],
                        "val_labels": [i.label for i in split.val],
                        "warnings": list(split.warnings)})
    console.print(f"{config.arch}: {count_parameters(net):,} parameters on {device}; "
                  f"{len(split.classes)} classes, {len(split.train)} train / {len(split.val)} "
                  f"val videos ({split.method} split)")
    out.mkdir(parents=True, exist_ok=True)
    state = fit(model, train_loader, val_loader, optimizer, scheduler, nn.CrossEntropyLoss(),
                device, out, epochs=config.epochs, patience=config.patience, state=state)
    if config.export and (out / "best.pt").is_file():
        name = config.export_name or out.resolve().name
        report = export_checkpoint(out / "best.pt", out / f"{name}.onnx")
        console.print(f"exported {report['onnx']} ({report['bytes'] / 1e6:.2f} MB, parity max "
                      f"abs diff {report['train']['parity_max_abs_diff']:.2e})")
    return state


FRAME_HEAD = "frame-head"


def train_frame_head(root: Path, out: Path) -> None:
    """The default model's recipe on the corpus at ROOT (its MANIFEST.tsv): parts, split by group,
    out-of-fold thresholds, heads, export (training/build_default.py)."""
    from training.build_default import DefaultModelConfig, run

    if not (root / "MANIFEST.tsv").is_file():
        raise DatasetError(f"{root} has no MANIFEST.tsv: --arch {FRAME_HEAD} trains on a corpus like "
                           "training/corpus_videos.tsv describes (columns file, label, kind, group)")
    config = DefaultModelConfig(measure_scan_speed=False, calibration_windows=40)
    card = run(out, config, root, root / "MANIFEST.tsv", None, out / "work", echo=console.print, shared_clips=False)
    console.print(f"exported {out / 'default.onnx'} ({card['bytes'] / 1e6:.2f} MB) and default_audio.onnx")


def _tuple(value: Any) -> tuple | None:
    return tuple(value) if value is not None else None


app = typer.Typer(add_completion=False, help="Train a video classifier on ROOT/<class>/ videos.")


@app.command()
def main(
    root: Annotated[Path, typer.Argument(help="class folders; a MANIFEST.tsv corpus for frame-head")],
    out: Annotated[Path, typer.Option(help="run folder for checkpoints and the model")],
    arch: Annotated[str, typer.Option(help="c3d, vc3d, framemean, efficientnet, frame-head")] = "c3d",
    width: Annotated[float | None, typer.Option(help="channel multiplier, e.g. 0.25")] = None,
    dropout: Annotated[float | None, typer.Option(help="dropout of the arch")] = None,
    classes: Annotated[str | None, typer.Option(help="A,B,... or a file of names")] = None,
    split_dir: Annotated[Path | None, typer.Option(help="folder of UCF101 split files")] = None,
    split: Annotated[int, typer.Option(help="K of trainlist0K/testlist0K")] = 1,
    group_regex: Annotated[str | None, typer.Option(help="group = 1st capture group")] = None,
    val_fraction: Annotated[float, typer.Option(help="held-out share w/o split files")] = 0.2,
    clip_len: Annotated[int | None, typer.Option(help="frames per clip (arch default)")] = None,
    size: Annotated[int | None, typer.Option(help="square crop side (arch default)")] = None,
    resize: Annotated[int | None, typer.Option(help="short side before crop")] = None,
    fps: Annotated[float, typer.Option(help="rate clips are sampled at")] = 25.0,
    frame_step: Annotated[int, typer.Option(help="take every Nth frame at --fps")] = 1,
    batch_size: Annotated[int, typer.Option(help="clips per step")] = 20,
    epochs: Annotated[int, typer.Option(help="maximum epochs")] = 50,
    lr: Annotated[float, typer.Option(help="Adam learning rate")] = 1e-3,
    weight_decay: Annotated[float, typer.Option(help="Adam weight decay")] = 0.0,
    lr_patience: Annotated[int, typer.Option(help="ReduceLROnPlateau patience")] = 4,
    patience: Annotated[int, typer.Option(help="early-stopping patience")] = 10,
    train_clips: Annotated[int, typer.Option(help="clips per train video per epoch")] = 1,
    val_clips: Annotated[int, typer.Option(help="clips per val video")] = 3,
    flip: Annotated[bool, typer.Option("--flip/--no-flip", help="random h-flip")] = True,
    workers: Annotated[int, typer.Option(help="decoding processes")] = 2,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
    resume: Annotated[bool, typer.Option(help="continue OUT/last.pt")] = False,
    export: Annotated[bool, typer.Option("--export/--no-export", help="ONNX at the end")] = True,
    export_name: Annotated[str | None, typer.Option(help="NAME of OUT/NAME.onnx")] = None,
) -> None:
    """Train on ROOT, keep the best checkpoint, export it.

    Example: python -m training.fit data/UCF-101 --out runs/ucf10 --split-dir data/ucfTrainTestlist

    `--arch frame-head` trains the default model's recipe instead (training/build_default.py): linear heads on frozen ImageNet EfficientNet-Lite0 features of whole frames, on a corpus with a MANIFEST.tsv.
    """
    try:
        if arch == FRAME_HEAD:
            train_frame_head(root, out)
            return
        config = FitConfig(out=str(out), arch=arch, batch_size=batch_size, epochs=epochs, lr=lr,
                           weight_decay=weight_decay, lr_patience=lr_patience, patience=patience,
                           train_clips=train_clips, val_clips=val_clips, flip=flip,
                           workers=workers, seed=seed, device=device, export=export,
                           export_name=export_name)
        data = DataConfig(root=str(root), classes=parse_classes(classes),
                          split_dir=str(split_dir) if split_dir else None, split=split,
                          group_regex=group_regex, val_fraction=val_fraction, seed=seed)
        clip = {"clip_len": clip_len, "size": (size, size) if size else None, "resize": resize,
                "fps": fps, "frame_step": frame_step}
        train_from_configs(config, data, clip, {"width": width, "dropout": dropout}, resume)
    except TaggerError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None


if __name__ == "__main__":
    app()
