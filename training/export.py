"""Export a trained video model to a self-describing ONNX file (+ a JSON model card).

`export_video_model` is the one entry point every architecture uses (C3D here, the pretrained
default in `training/pretrained.py`): it wraps the model so the graph takes what the tagger feeds,
uint8 `frames` `[N, T, H, W, 3]` RGB, and does the /255, mean/std normalisation and the layout
change to `(N, 3, T, H, W)` inside the graph (with `contract.crops` C > 1, T*C frames there, frame
t's crops at t*C .. t*C+C-1: the model splits them itself). It then checks itself
(`onnx.checker`, onnxruntime vs torch on real clips), writes the contract into `metadata_props`
and a model card `NAME.json` beside the `.onnx`.

CLI (rebuilds the model from a checkpoint made by `python -m training.fit`):

    python -m training.export runs/ucf10/best.pt --name instruments_c3d --out exports/
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
import typer
from torch import nn

from tagger.contract import INPUT_NAME, ModelContract
from tagger.errors import ModelError, TaggerError

OPSET = 17  # Conv3d/MaxPool3d/BatchNorm export cleanly; onnxruntime >= 1.17 runs it
MAX_EXPORT_MB = 25.0  # shipped models stay small enough for the repository and a quick download
PARITY_ATOL = 1e-3  # max |onnx - torch| allowed, scaled by max(1, |logit|): float32 noise is ~1e-5
PARITY_BATCH = 8  # clips per forward pass in the parity check (bounds memory for big models)


class UInt8VideoInput(nn.Module):
    """Takes uint8 `[N, T, H, W, 3]` RGB frames; normalises and feeds `(N, 3, T, H, W)` to `model`.

    Args:
        model: maps float `(N, 3, T, H, W)` normalised clips to logits `(N, K)`.
        mean: per-channel RGB mean on the 0..1 scale.
        std: per-channel RGB standard deviation on the 0..1 scale.
        probs: apply softmax so the graph outputs probabilities instead of logits.
    """

    def __init__(self, model: nn.Module, mean: tuple[float, float, float],
                 std: tuple[float, float, float], probs: bool = False) -> None:
        super().__init__()
        self.model = model
        self.probs = probs
        # (x / 255 - mean) / std as one multiply-add, shaped (1, 3, 1, 1, 1) for channel-first clips.
        mean_t = torch.tensor(mean, dtype=torch.float64)
        std_t = torch.tensor(std, dtype=torch.float64)
        self.register_buffer("scale", (1.0 / (255.0 * std_t)).float().view(1, 3, 1, 1, 1))
        self.register_buffer("shift", (-mean_t / std_t).float().view(1, 3, 1, 1, 1))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        # The layout change runs on the uint8 frames, a quarter of the bytes of float ones.
        x = frames.permute(0, 4, 1, 2, 3).to(torch.float32)  # (N, 3, T, H, W)
        out = self.model(x * self.scale + self.shift)  # (N, K)
        return torch.softmax(out, dim=1) if self.probs else out


def export_video_model(
    model: nn.Module,
    contract: ModelContract,
    out_path: Path,
    *,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    parity_frames: np.ndarray | None = None,
    card: dict | None = None,
    max_mb: float | None = MAX_EXPORT_MB,
    softmax: bool | None = None,
) -> dict:
    """Export `model` as a tagger video model: one `.onnx` file plus a `.json` model card.

    Args:
        model: takes float `(N, 3, T, H, W)` clips normalised with `mean`/`std`, returns logits
            `(N, K)` with K == len(contract.labels). It is copied to the CPU; the caller's module
            is left as it was.
        contract: what the model expects and means (labels, clip_len, size, fps, ...). Its
            `output` picks the graph output `logits` or `probs` (softmax added in the graph).
        out_path: the `.onnx` file to write; the card goes to the same path with `.json`.
        mean: per-channel RGB mean on the 0..1 scale, applied inside the graph.
        std: per-channel RGB standard deviation on the 0..1 scale.
        parity_frames: real decoded clips, uint8 `(N, T*C, H, W, 3)` as a scan feeds them
            (`tagger.step.window_inputs`), to compare onnxruntime with torch on. Without them
            random frames are used and the card says so.
        card: extra model-card fields (data, split, epochs, metrics); also stored under
            `tagger.train` in the ONNX metadata.
        max_mb: refuse to write a model larger than this (None: no limit).
        softmax: add a softmax after `model` (None: when the contract's output is `probs`). False
            for a `probs` model whose module already returns scores in [0, 1] that need not sum
            to 1 (per-label scores pooled over crops and frames).

    Returns:
        The report: `onnx` and `card` paths, `parity_max_abs_diff`, and the card's fields (name,
        bytes, sha256, labels, input, output, thresholds, train).

    Raises:
        ModelError: the model does not match the contract, fails `onnx.checker`, or onnxruntime
            disagrees with torch.
    """
    out_path = Path(out_path)
    contract.validate(str(out_path))
    if contract.kind != "video":
        raise ModelError(f"export_video_model exports video models, got kind {contract.kind!r}")
    wrapper = UInt8VideoInput(copy.deepcopy(model).cpu().eval(), mean, std,
                              probs=contract.output == "probs" if softmax is None else softmax).eval()
    frames, parity_input = _parity_input(contract, parity_frames)
    expected = _torch_outputs(wrapper, frames)  # (N, K)
    if expected.shape[1] != len(contract.labels):
        raise ModelError(f"model gives {expected.shape[1]} scores but the contract has "
                         f"{len(contract.labels)} labels: {list(contract.labels)}")

    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = out_path.with_name(out_path.name + ".tmp")
    _trace_to_onnx(wrapper, frames[:2], contract.output, tmp_path)
    graph = _simplify(onnx.load(str(tmp_path)))
    try:
        onnx.checker.check_model(graph, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ModelError(f"exported graph fails onnx.checker: {str(exc).splitlines()[0]}") from exc
    onnx.save(graph, str(tmp_path))  # the parity check reads the file: it must be the simplified graph

    try:
        parity = _parity_check(tmp_path, frames, expected, contract.output)
    except ModelError:
        tmp_path.unlink()
        raise
    parity["parity_input"] = parity_input
    train = {**dict(contract.train), **(card or {}), **parity}
    contract = dataclasses.replace(contract, train=train)
    del graph.metadata_props[:]
    for key, value in contract.to_metadata().items():
        graph.metadata_props.add(key=key, value=value)
    onnx.save(graph, str(tmp_path))  # one file: our models are far below protobuf's 2 GB limit
    size_mb = tmp_path.stat().st_size / 1e6
    if max_mb is not None and size_mb > max_mb:
        tmp_path.unlink()
        raise ModelError(f"exported model is {size_mb:.1f} MB, over the {max_mb:g} MB limit: "
                         "train a smaller model (e.g. --width 0.5) or raise --max-mb")
    os.replace(tmp_path, out_path)

    card_path = out_path.with_suffix(".json")
    model_card = _model_card(out_path, contract, mean, std)
    card_path.write_text(json.dumps(model_card, indent=2) + "\n")
    return {"onnx": str(out_path), "card": str(card_path),
            "parity_max_abs_diff": parity["parity_max_abs_diff"], **model_card}


def _parity_input(contract: ModelContract,
                  parity_frames: np.ndarray | None) -> tuple[np.ndarray, str]:
    """The uint8 clips to trace and compare on, and whether they are real or random."""
    h, w = contract.size
    shape = (contract.input_frames, h, w, 3)  # T*C frames: clip_len times crops
    if parity_frames is None:
        rng = np.random.default_rng(0)
        return rng.integers(0, 256, size=(2, *shape), dtype=np.uint8), "random"
    frames = np.asarray(parity_frames)
    if frames.dtype != np.uint8 or frames.ndim != 5 or frames.shape[1:] != shape:
        raise ModelError(f"parity_frames must be uint8 (N, {', '.join(map(str, shape))}), "
                         f"got {frames.dtype} {tuple(frames.shape)}")
    if len(frames) == 1:  # trace with N=2 so nothing gets specialised to a batch of one
        frames = np.concatenate([frames, frames[:, ::-1]])
    return frames, "real"


def _torch_outputs(wrapper: nn.Module, frames: np.ndarray) -> np.ndarray:
    """Reference scores from torch, in batches of PARITY_BATCH."""
    outputs = []
    with torch.no_grad():
        for start in range(0, len(frames), PARITY_BATCH):
            batch = torch.from_numpy(np.ascontiguousarray(frames[start:start + PARITY_BATCH]))
            outputs.append(wrapper(batch).numpy())
    return np.concatenate(outputs)  # (N, K)


def _trace_to_onnx(wrapper: nn.Module, example: np.ndarray, output_name: str, path: Path) -> None:
    """Write the graph with the TorchScript exporter (robust for Conv3d; needs no onnxscript)."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the legacy-exporter deprecation notice is not news
        torch.onnx.export(
            wrapper,
            (torch.from_numpy(np.ascontiguousarray(example)),),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[output_name],
            dynamic_axes={INPUT_NAME: {0: "N"}, output_name: {0: "N"}},
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )


def _simplify(graph: onnx.ModelProto) -> onnx.ModelProto:
    """The graph with constant subgraphs folded and padding merged into the convolutions (onnxsim).

    The tracer leaves shape arithmetic and separate Pad nodes (TensorFlow "SAME" padding) that
    onnxruntime runs on every call: on the default model they cost 40% of its CPU time. The parity
    check that follows runs on the simplified graph as saved, so a wrong rewrite cannot ship.
    """
    import onnxsim

    simplified, ok = onnxsim.simplify(graph)
    if not ok:
        raise ModelError("onnxsim could not validate the simplified graph: the export is wrong")
    return simplified


def _parity_check(path: Path, frames: np.ndarray, expected: np.ndarray,
                  output_name: str) -> dict[str, Any]:
    """Run the file with plain onnxruntime (CPU) and compare with the torch scores."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = np.concatenate([
        session.run([output_name], {INPUT_NAME: frames[start:start + PARITY_BATCH]})[0]
        for start in range(0, len(frames), PARITY_BATCH)
    ])
    diff = float(np.max(np.abs(got - expected)))
    agree = float(np.mean(got.argmax(1) == expected.argmax(1)))
    tolerance = PARITY_ATOL * max(1.0, float(np.max(np.abs(expected))))
    if not diff <= tolerance:
        raise ModelError(f"onnxruntime and torch disagree by {diff:.3g} (tolerance "
                         f"{tolerance:.3g}) on {len(frames)} clips: the export is wrong")
    return {"parity_max_abs_diff": diff, "parity_top1_agreement": agree,
            "parity_clips": len(frames)}


def _model_card(path: Path, contract: ModelContract, mean: tuple[float, float, float],
                std: tuple[float, float, float]) -> dict[str, Any]:
    """The human-readable description written beside the ONNX file."""
    data = path.read_bytes()
    return {
        "name": path.stem,
        "file": path.name,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "arch": contract.arch,
        "version": contract.version,
        "labels": list(contract.labels),
        "background": contract.background,
        "input": {"name": INPUT_NAME, "dtype": "uint8", "shape": ["N", contract.input_frames,
                  *contract.size, 3], "layout": "NTHWC RGB", "crops": contract.crops,
                  "resize": contract.resize,
                  "fps": contract.fps, "frame_step": contract.frame_step,
                  "window_seconds": contract.window_seconds, "mean": list(mean),
                  "std": list(std)},
        "output": {"name": contract.output, "shape": ["N", len(contract.labels)]},
        "thresholds": dict(contract.thresholds),
        "train": dict(contract.train),
    }


app = typer.Typer(add_completion=False, help="Export a training checkpoint to a tagger ONNX model.")


@app.command()
def main(
    checkpoint: Annotated[Path, typer.Argument(help="checkpoint written by training.fit")],
    name: Annotated[str, typer.Option(help="model name: writes OUT/NAME.onnx and NAME.json")],
    out: Annotated[Path, typer.Option(help="folder for the exported files")] = Path("exports"),
    parity_clips: Annotated[int, typer.Option(help="held-out clips for the parity check")] = 8,
    max_mb: Annotated[float, typer.Option(help="refuse larger models")] = MAX_EXPORT_MB,
) -> None:
    """Export CHECKPOINT as OUT/NAME.onnx.

    Example: python -m training.export runs/ucf10/best.pt --name instruments_c3d --out exports/
    """
    # Imported here: export_video_model's callers need neither checkpoints nor datasets.
    from training.checkpoint import export_checkpoint

    try:
        report = export_checkpoint(checkpoint, out / f"{name}.onnx", parity_clips=parity_clips,
                                   max_mb=max_mb)
    except TaggerError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    typer.echo(f"wrote {report['onnx']} ({report['bytes'] / 1e6:.2f} MB), parity max abs diff "
               f"{report['train']['parity_max_abs_diff']:.2e} on {report['train']['parity_clips']} "
               f"{report['train']['parity_input']} clips")


if __name__ == "__main__":
    app()
