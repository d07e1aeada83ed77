"""Evaluate a checkpoint: `python -m training.evaluate CHECKPOINT ROOT`.

Scores uniform clips of every video (centre crop), averages a video's clip probabilities into its
video score, and reports clip accuracy, video accuracy, macro F1 and per-class precision/recall
(video level). Writes next to the checkpoint: `<stem>.evaluation.json` (all metrics),
`<stem>.confusion.json` and `<stem>.confusion.png` (rows: true class, columns: predicted), and
`curves.png` (loss and accuracy per epoch from the history `training.fit` stored).

By default it evaluates the checkpoint's own validation videos, found under ROOT by their path
relative to the training root (so a moved dataset still works); `--all` evaluates every video
under ROOT/<label>/, e.g. a test set the model never saw.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt
import numpy as np
import typer
from rich.console import Console
from rich.table import Table
from torch import nn
from torch.utils.data import DataLoader

from tagger.errors import TaggerError
from training.checkpoint import clip_spec_of, load_checkpoint, model_from_checkpoint
from training.data import ClipDataset, DatasetError, VideoItem, discover_videos, worker_context
from training.export import UInt8VideoInput
from training.fit import evaluate, pick_device

console = Console()


def videos_to_evaluate(state: dict[str, Any], root: Path, all_videos: bool) -> tuple[VideoItem, ...]:
    """The checkpoint's validation videos under ROOT, or (`all_videos`) every labelled video."""
    labels = list(state["labels"])
    if all_videos:
        folders, videos = discover_videos(root, None)
        unknown = [name for name in folders if name not in labels]
        if unknown:
            raise DatasetError(f"class folder {root / unknown[0]} is not one of the model's "
                               f"labels: {', '.join(labels)}")
        return tuple(VideoItem(str(path), labels.index(folders[label]), None)
                     for path, label in videos)
    trained_root = Path(state["data"]["root"])
    items = []
    for path, label in zip(state["split"]["val"], state["split"]["val_labels"]):
        moved = root / Path(path).relative_to(trained_root)
        if not moved.is_file():
            raise DatasetError(f"validation video {moved} does not exist: pass the training "
                               "ROOT, or --all to evaluate every video under ROOT")
        items.append(VideoItem(str(moved), label, None))
    return tuple(items)


def classification_metrics(probs: np.ndarray, truth: np.ndarray, labels: list[str]) -> dict:
    """Accuracy, macro F1, per-class precision/recall/F1/support and the confusion matrix."""
    k = len(labels)
    predicted = probs.argmax(1)
    confusion = np.zeros((k, k), dtype=int)  # rows: true class, columns: predicted class
    np.add.at(confusion, (truth, predicted), 1)
    per_class = {}
    for index, name in enumerate(labels):
        hits = confusion[index, index]
        precision = hits / max(1, confusion[:, index].sum())
        recall = hits / max(1, confusion[index].sum())
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": float(precision), "recall": float(recall),
                           "f1": float(f1), "support": int(confusion[index].sum())}
    present = [m["f1"] for m in per_class.values() if m["support"]]
    return {"accuracy": float(np.mean(predicted == truth)),
            "macro_f1": float(np.mean(present)) if present else 0.0,
            "per_class": per_class, "confusion": confusion.tolist()}


def plot_confusion(confusion: list[list[int]], labels: list[str], path: Path) -> None:
    """The confusion matrix as a heat map with counts."""
    matrix = np.array(confusion)
    figure, axes = plt.subplots(figsize=(2 + 0.6 * len(labels), 1.5 + 0.6 * len(labels)))
    axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    for (row, col), count in np.ndenumerate(matrix):
        axes.text(col, row, str(count), ha="center", va="center",
                  color="white" if count > matrix.max() / 2 else "black")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_history(history: list[dict[str, float]], path: Path) -> None:
    """Loss and accuracy per epoch, training and validation."""
    epochs = [row["epoch"] for row in history]
    figure, (loss_axes, acc_axes) = plt.subplots(1, 2, figsize=(10, 4))
    loss_axes.plot(epochs, [r["train_loss"] for r in history], label="train")
    loss_axes.plot(epochs, [r["val_loss"] for r in history], label="validation")
    loss_axes.set_title("loss")
    acc_axes.plot(epochs, [r["train_accuracy"] for r in history], label="train clips")
    acc_axes.plot(epochs, [r["val_accuracy"] for r in history], label="validation clips")
    acc_axes.plot(epochs, [r["val_video_accuracy"] for r in history], label="validation videos")
    acc_axes.set_title("accuracy")
    for axes in (loss_axes, acc_axes):
        axes.set_xlabel("epoch")
        axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def evaluate_checkpoint(checkpoint: Path, root: Path, *, all_videos: bool = False,
                        clips: int = 5, batch_size: int = 20, workers: int = 2,
                        device: str = "auto") -> dict[str, Any]:
    """Evaluate `checkpoint` on ROOT and write the metrics and plots next to it.

    Returns:
        The metrics written to `<stem>.evaluation.json`.
    """
    checkpoint = Path(checkpoint)
    state = load_checkpoint(checkpoint)
    labels = list(state["labels"])
    items = videos_to_evaluate(state, Path(root), all_videos)
    model, config = model_from_checkpoint(state)
    target = pick_device(device)
    wrapper = UInt8VideoInput(model, tuple(config.mean), tuple(config.std)).to(target).eval()
    dataset = ClipDataset(items, clip_spec_of(state), train=False, clips_per_video=clips)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                        multiprocessing_context=worker_context(workers))
    result = evaluate(wrapper, loader, nn.CrossEntropyLoss(), target, "evaluate")
    metrics = classification_metrics(result["video_probs"], result["video_labels"], labels)
    report = {"checkpoint": str(checkpoint), "root": str(root), "videos": len(items),
              "clips_per_video": clips, "clip_accuracy": result["accuracy"],
              "video_accuracy": result["video_accuracy"], "loss": result["loss"],
              "macro_f1": metrics["macro_f1"], "per_class": metrics["per_class"],
              "labels": labels, "epoch": state["epoch"]}
    stem = checkpoint.with_suffix("")
    report["written"] = [f"{stem}.evaluation.json", f"{stem}.confusion.json", f"{stem}.confusion.png"]
    if state.get("history"):
        report["written"].append(str(checkpoint.parent / "curves.png"))
    Path(f"{stem}.evaluation.json").write_text(json.dumps(report, indent=2) + "\n")
    Path(f"{stem}.confusion.json").write_text(json.dumps(
        {"labels": labels, "rows": "true", "columns": "predicted",
         "matrix": metrics["confusion"]}, indent=2) + "\n")
    plot_confusion(metrics["confusion"], labels, Path(f"{stem}.confusion.png"))
    if state.get("history"):
        plot_history(state["history"], checkpoint.parent / "curves.png")
    return report


def _render(report: dict[str, Any]) -> None:
    table = Table(title=f"{report['videos']} videos, {report['clips_per_video']} clips each")
    for column in ("class", "precision", "recall", "f1", "videos"):
        table.add_column(column)
    for name, row in report["per_class"].items():
        table.add_row(name, f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}",
                      str(row["support"]))
    console.print(table)
    console.print(f"clip accuracy {report['clip_accuracy']:.3f}  video accuracy "
                  f"{report['video_accuracy']:.3f}  macro F1 {report['macro_f1']:.3f}")
    written = [Path(p) for p in report["written"]]
    console.print(f"wrote {', '.join(p.name for p in written)} in {written[0].parent}", markup=False, highlight=False)


app = typer.Typer(add_completion=False, help="Evaluate a training checkpoint on videos.")


@app.command()
def main(
    checkpoint: Annotated[Path, typer.Argument(help="best.pt or last.pt from training.fit")],
    root: Annotated[Path, typer.Argument(help="dataset ROOT with one folder per class")],
    all_videos: Annotated[bool, typer.Option("--all", help="every video under ROOT")] = False,
    clips: Annotated[int, typer.Option(help="uniform clips per video")] = 5,
    batch_size: Annotated[int, typer.Option(help="clips per forward pass")] = 20,
    workers: Annotated[int, typer.Option(help="decoding processes")] = 2,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
) -> None:
    """Report accuracy, macro F1 and per-class scores; write plots next to CHECKPOINT.

    Example: python -m training.evaluate runs/ucf10/best.pt data/UCF-101
    """
    try:
        report = evaluate_checkpoint(checkpoint, root, all_videos=all_videos, clips=clips,
                                     batch_size=batch_size, workers=workers, device=device)
    except TaggerError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    _render(report)


if __name__ == "__main__":
    app()
