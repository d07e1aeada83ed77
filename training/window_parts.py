"""What the default model's backbone makes of every window a scan would feed it, cached on disk.

The head (and the projection to stored features) is fitted on these, so it learns from exactly
what a scan computes: each file is opened and cut into windows by the tagger's own per-video step
(`tagger.step.decode_windows`: the scan's decoders, window plan and whole-frame views), and each
window is run through the exported, quantised backbone graph (`parts.onnx`) with onnxruntime, as
the scan runs it. A window's parts are the mean over its frames of the pooled [mean, best]
features (2560) and of the instrument priors (P); `training.frame_net.WindowFeatures.combine`
turns them into the stored features, and the shipped graph appends that same arithmetic.

A photo is a one-frame video: its window repeats the frame, as a scan of a still would.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tagger.contract import ModelContract
from tagger.errors import DecodeError
from tagger.step import VIDEO, Failed, Inputs, Opened, Restarted, VideoJob, decode_windows
from training.frame_net import STRIDE, WindowFeatures
from training.imagenet_map import tag_names

PARTS_VERSION = 2  # part of every cache key: raise it when decoding or the parts change (2: keyframes stand in)
POOLED = 2560  # [mean, best] of 1280 channels each


class WindowParts(nn.Module):
    """uint8 windows `(N, T, H, W, 3)` -> parts `(N, 2560 + P)`: frame means of pooled features and priors."""

    def __init__(self, features: WindowFeatures):
        super().__init__()
        self.features = features

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        pooled, prior = self.features.frame_parts(windows)
        return torch.cat([pooled.mean(dim=1), prior.mean(dim=1)], dim=1)


def parts_contract(clip_len: int, fps: float, resize: int = 224) -> ModelContract:
    """The sampling half of the default model's contract: what `decode_windows` needs."""
    return ModelContract(labels=tag_names(), clip_len=clip_len, size=(resize, resize), resize=resize, fps=fps,
                         whole_frame=STRIDE)


def export_parts(module: WindowParts, path: Path, clip_len: int) -> None:
    """Write the parts graph as ONNX, any N, H and W (multiples of 32), folded by onnxsim."""
    import onnx
    import onnxsim

    example = torch.randint(0, 255, (1, clip_len, 224, 384, 3), dtype=torch.uint8)
    raw = path.with_suffix(".raw.onnx")
    torch.onnx.export(module.eval(), (example,), str(raw), input_names=["frames"], output_names=["parts"],
                      dynamic_axes={"frames": {0: "N", 2: "H", 3: "W"}, "parts": {0: "N"}},
                      opset_version=17, do_constant_folding=True, dynamo=False)
    simplified, ok = onnxsim.simplify(onnx.load(str(raw)))
    if not ok:
        raise RuntimeError("onnxsim could not validate the simplified parts graph")
    onnx.save(simplified, str(path))
    raw.unlink()


@dataclass
class ItemParts:
    """One file's windows and their parts."""

    starts: np.ndarray  # (W,) seconds
    ends: np.ndarray  # (W,) seconds
    parts: np.ndarray  # (W, 2560 + P) float32


def cache_key(path: Path, model_sha: str, contract: ModelContract, hop: float | None) -> str:
    stat = path.stat()
    text = (f"{PARTS_VERSION}:{model_sha}:{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:"
            f"{contract.clip_len}:{contract.fps:g}:{hop}")
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def extract(path: Path, session, model_sha: str, contract: ModelContract, hop: float | None,
            cache: Path, batch: int = 4) -> ItemParts:
    """The parts of every window of `path` (a scan's windows when `hop` is None), cached.

    Raises:
        DecodeError: no decoder could read the file.
    """
    stored = cache / f"{cache_key(path, model_sha, contract, hop)}.npz"
    if stored.is_file():
        with np.load(stored) as data:
            return ItemParts(data["starts"], data["ends"], data["parts"])
    job = VideoJob.for_model(contract, path, hop=hop)
    opened, chunks = None, []
    for event in decode_windows(job):
        if isinstance(event, Opened):
            opened = event
        elif isinstance(event, Inputs) and event.stream == VIDEO:
            for i in range(0, len(event.data), batch):
                chunks.append(session.run(["parts"], {"frames": event.data[i : i + batch]})[0])
        elif isinstance(event, Restarted):
            chunks = []
        elif isinstance(event, Failed):
            raise DecodeError(event.reason)
    found = ItemParts(opened.starts, opened.ends, np.concatenate(chunks).astype(np.float32))
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(stored, starts=found.starts, ends=found.ends, parts=found.parts)
    return found


def window_inputs_sample(path: Path, contract: ModelContract, count: int) -> list[np.ndarray]:
    """Up to `count` windows (T, H, W, 3) of `path` as a scan feeds them: calibration for INT8."""
    windows: list[np.ndarray] = []
    for event in decode_windows(VideoJob.for_model(contract, path)):
        if isinstance(event, Inputs) and event.stream == VIDEO:
            windows += list(event.data)
        if len(windows) >= count:
            break
    return windows[:count]


AUDIO_PARTS = ("/network/dense_norm/BatchNormalization_output_0", "/network/output/Gemm_output_0")  # musicnn: hidden 200, MTT logits 50


def audio_parts_graph(musicnn: Path, target: Path) -> None:
    """The shipped music model with its penultimate layer and MTT logits as one output `parts` (N, 250)."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(musicnn))
    model.graph.node.append(helper.make_node("Concat", list(AUDIO_PARTS), ["parts"], axis=1))
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info("parts", TensorProto.FLOAT, ["N", 250]))
    onnx.save(model, str(target))


def extract_audio(path: Path, session, model_sha: str, contract: ModelContract, sample_rate: int,
                  patch_seconds: float, cache: Path) -> ItemParts | None:
    """The music model's parts for the sound of every scan window of `path` (the scan's own patch
    bounds), cached; None when the file has no usable sound track."""
    from tagger.audio import NoAudio, patch_bounds, read_patches
    from tagger.decode import open_video
    from tagger.windows import plan_windows

    stored = cache / f"a{cache_key(path, model_sha, contract, None)}.npz"
    if stored.is_file():
        with np.load(stored) as data:
            return ItemParts(data["starts"], data["ends"], data["parts"]) if len(data["parts"]) else None
    source = open_video(str(path), contract.resize)
    try:
        plan = plan_windows(source.timestamps, source.info.duration, contract.clip_len, contract.frame_interval)
        duration = source.info.duration
    finally:
        source.close()
    bounds = patch_bounds(plan.starts, plan.ends, duration, patch_seconds, sample_rate)
    chunks: list[np.ndarray] = []
    try:
        for _, patches in read_patches(str(path), bounds, sample_rate, 8):
            chunks.append(session.run(["parts"], {"audio": patches})[0])
    except (NoAudio, DecodeError):
        chunks = []
    found = ItemParts(plan.starts, plan.ends, np.concatenate(chunks).astype(np.float32) if chunks else np.zeros((0, 250)))
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(stored, starts=found.starts, ends=found.ends, parts=found.parts)
    return found if len(found.parts) else None
