"""The model contract: what an exported ONNX model says about itself in `metadata_props`.

`training/` writes it with `ModelContract.to_metadata()`, `tagger/` reads it back with
`ModelContract.from_metadata()`, so nothing about a model is hard-coded in the tagger.

Video models (`tagger.kind` = video) take input `frames`: uint8 `[N, T*C, H, W, 3]` RGB
(normalisation happens inside the graph) and give `logits` or `probs` float32 `[N, K]`. A window
covers `clip_len` (T) frames taken every `frame_step / fps` seconds, so it spans
`clip_len * frame_step / fps` seconds of video. Each frame gives `crops` (C, default 1: the centre
crop) crops of `size` spread along its long side (`tagger.decode.crop_origins`), frame-major: frame
t's crops are rows t*C .. t*C+C-1, and the graph reshapes to (N, T, C, H, W, 3) itself.
`left_out` (optional) names labels the model deliberately does not tag, each with the reason.

A whole-frame video model (`tagger.whole_frame` = M, a whole number) takes each sampled frame whole
instead of crops: scaled to short side `resize`, then each side trimmed about the centre to a
multiple of M (`tagger.decode.whole_frame`), input `[N, T, H, W, 3]` with H and W the trimmed
frame's (they differ between videos of other shapes; the graph takes any). A convolutional
backbone with stride M then sees every pixel once, for the whole frame, with the padding it was
traced with. `size` is then the smallest frame it takes ([resize, resize]).

A model may give a second output, `features` float32 `[N, D]` (`tagger.features` = {"dim": D,
...}): what the scan stores per window so heads added later score stored videos without decoding
(`tagger.head`, when present, is the model's own head on those features: {"weights": base64 of
float32 [K, D] little-endian, "bias": [K], "activation": "sigmoid"}).

Audio models (`tagger.kind` = audio) take input `audio`: float32 `[N, S]` mono PCM in [-1, 1] at
`tagger.sample_rate`, S = `patch_seconds * sample_rate` (any spectrogram is computed inside the
graph), and give `logits` or `probs` float32 `[N, K]` over their own labels.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tagger.errors import ModelError

PREFIX = "tagger."
INPUT_NAME = "frames"
AUDIO_INPUT_NAME = "audio"
OUTPUT_KINDS = ("logits", "probs")
MODEL_KINDS = ("video", "audio")
REQUIRED_KEYS = {
    "video": ("labels", "clip_len", "size", "resize", "fps", "frame_step", "threshold"),
    "audio": ("labels", "sample_rate", "patch_seconds", "threshold"),
}
DEFAULT_THRESHOLD = 0.5  # used for a label the model gives no threshold of its own


@dataclass(frozen=True)
class ModelContract:
    """Everything the tagger needs to know to feed a model and read its scores."""

    labels: tuple[str, ...]
    clip_len: int = 0  # video: T, frames per window
    size: tuple[int, int] = (0, 0)  # video: (H, W) of each crop fed to the model
    resize: int = 0  # video: short side the frame is scaled to before cropping
    fps: float = 0.0  # video: the frame rate the clip is sampled at
    frame_step: int = 1  # video: take every frame_step-th frame at `fps`
    crops: int = 1  # video: C crops per frame, spread along its long side; 1 is the centre crop
    whole_frame: int = 0  # video: 0 = crops of `size`; M = the whole frame, sides trimmed to multiples of M
    thresholds: Mapping[str, float] = field(default_factory=dict)  # per-label default score threshold
    output: str = "logits"  # "logits" (tagger applies softmax) or "probs" (used as they are)
    kind: str = "video"
    sample_rate: int = 0  # audio: PCM samples per second
    patch_seconds: float = 0.0  # audio: seconds of sound per input row
    background: str | None = None  # the "nothing of interest" label; never stored as a tag
    arch: str = "unknown"
    version: str = "0"
    train: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)  # other tagger.* keys, decoded JSON

    @property
    def input_name(self) -> str:
        return AUDIO_INPUT_NAME if self.kind == "audio" else INPUT_NAME

    @property
    def window_seconds(self) -> float:
        """Seconds of video (or sound) one window covers."""
        if self.kind == "audio":
            return self.patch_seconds
        return self.clip_len * self.frame_step / self.fps

    @property
    def input_frames(self) -> int:
        """Frames in one window's model input, T * C: the input is `[N, T*C, H, W, 3]`."""
        return self.clip_len * self.crops

    @property
    def feature_dim(self) -> int:
        """D of the model's `features` output (`tagger.features`), 0 when it has none."""
        features = self.extra.get("features")
        return int(features.get("dim", 0)) if isinstance(features, Mapping) else 0

    @property
    def left_out(self) -> dict[str, str]:
        """Labels the model deliberately does not tag -> why (`tagger.left_out`; empty when absent)."""
        return dict(self.extra.get("left_out") or {})

    @property
    def fusion_support(self) -> float | None:
        """The fraction of its threshold vision must reach for sound to confirm a label
        (`tagger.fusion_support`, chosen on held-out footage when the model was built), or None."""
        value = self.extra.get("fusion_support")
        return None if value is None else float(value)

    @property
    def frame_interval(self) -> float:
        """Seconds between two sampled frames of a window."""
        return self.frame_step / self.fps

    @property
    def tag_labels(self) -> tuple[str, ...]:
        """Labels that can become tags: all but the background label and raw descriptors (a
        threshold above 1, which no score reaches). The one home of this rule: fusion, the scan and
        `tagger models` all ask here."""
        return tuple(label for label in self.labels if label != self.background and self.threshold_for(label) <= 1.0)

    def threshold_for(self, label: str) -> float:
        """The model's default threshold for `label`."""
        return float(self.thresholds.get(label, DEFAULT_THRESHOLD))

    def to_metadata(self) -> dict[str, str]:
        """The `metadata_props` strings that describe this model (JSON where structured)."""
        geometry: dict[str, Any] = (
            {"sample_rate": self.sample_rate, "patch_seconds": self.patch_seconds}
            if self.kind == "audio"
            else {"clip_len": self.clip_len, "size": list(self.size), "resize": self.resize, "fps": self.fps,
                  "frame_step": self.frame_step}
        )
        if self.kind == "video" and self.crops != 1:  # absent means 1: a centre-crop model's file is unchanged
            geometry["crops"] = self.crops
        if self.kind == "video" and self.whole_frame:
            geometry["whole_frame"] = self.whole_frame
        props: dict[str, Any] = {
            "labels": list(self.labels),
            **geometry,
            "threshold": dict(self.thresholds),
            "output": self.output,
            "kind": self.kind,
            "background": self.background or "",
            "arch": self.arch,
            "version": self.version,
            "train": dict(self.train),
            **dict(self.extra),
        }
        return {PREFIX + key: _dump(value) for key, value in props.items()}

    @classmethod
    def from_metadata(cls, props: Mapping[str, str], source: str = "model") -> ModelContract:
        """Parse and validate `metadata_props`; raise ModelError naming the bad key."""
        values = {k[len(PREFIX):]: v for k, v in props.items() if k.startswith(PREFIX)}
        kind = values.get("kind", "video")
        if kind not in MODEL_KINDS:
            raise ModelError(f"{source}: {PREFIX}kind must be one of {', '.join(MODEL_KINDS)}, got {kind!r}")
        missing = [k for k in REQUIRED_KEYS[kind] if k not in values]
        if missing:
            raise ModelError(
                f"{source} has no tagger metadata ({', '.join(PREFIX + k for k in missing)} missing): "
                "export it with `python -m training.export`"
            )
        parsed = {key: _load(key, text, source) for key, text in values.items()}
        labels = parsed.pop("labels")
        if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
            raise ModelError(f"{source}: {PREFIX}labels must be a non-empty JSON list of names")
        thresholds = parsed.pop("threshold")
        if isinstance(thresholds, (int, float)):
            thresholds = {label: float(thresholds) for label in labels}
        if not isinstance(thresholds, dict):
            raise ModelError(f"{source}: {PREFIX}threshold must be a number or a JSON object")
        crops = parsed.pop("crops", 1)
        if not isinstance(crops, int) or isinstance(crops, bool):
            raise ModelError(f"{source}: {PREFIX}crops must be a whole number >= 1, got {crops!r}")
        whole_frame = parsed.pop("whole_frame", 0)
        if not isinstance(whole_frame, int) or isinstance(whole_frame, bool) or whole_frame < 0:
            raise ModelError(f"{source}: {PREFIX}whole_frame must be a whole number >= 1 (the multiple both "
                             f"sides are trimmed to), got {whole_frame!r}")
        try:
            size = tuple(int(x) for x in parsed.pop("size", (0, 0)))
            contract = cls(
                labels=tuple(labels),
                clip_len=int(parsed.pop("clip_len", 0)),
                size=(size[0], size[1]),
                resize=int(parsed.pop("resize", 0)),
                fps=float(parsed.pop("fps", 0.0)),
                frame_step=int(parsed.pop("frame_step", 1)),
                crops=crops,
                whole_frame=whole_frame,
                sample_rate=int(parsed.pop("sample_rate", 0)),
                patch_seconds=float(parsed.pop("patch_seconds", 0.0)),
                thresholds={str(k): float(v) for k, v in thresholds.items()},
                output=str(parsed.pop("output", "logits")),
                kind=str(parsed.pop("kind", "video")),
                background=str(parsed.pop("background", "")) or None,
                arch=str(parsed.pop("arch", "unknown")),
                version=str(parsed.pop("version", "0")),
                train=parsed.pop("train", {}) or {},
                extra=parsed,
            )
        except (TypeError, ValueError, IndexError) as exc:
            raise ModelError(f"{source}: malformed tagger metadata ({exc})") from exc
        contract.validate(source)
        return contract

    def validate(self, source: str = "model") -> None:
        """Raise ModelError if the values cannot describe a usable model."""
        problems = []
        if self.kind == "video":
            if self.clip_len < 1:
                problems.append(f"{PREFIX}clip_len must be >= 1, got {self.clip_len}")
            if min(self.size) < 1 or self.resize < min(self.size):
                problems.append(f"{PREFIX}size {list(self.size)} must fit inside resize {self.resize}")
            if self.fps <= 0 or self.frame_step < 1:
                problems.append(f"{PREFIX}fps and frame_step must be positive")
            if self.crops < 1:
                problems.append(f"{PREFIX}crops must be >= 1 (crops per frame; 1 is the centre crop), "
                                f"got {self.crops}")
            if self.whole_frame and (self.crops != 1 or self.resize % self.whole_frame):
                problems.append(f"{PREFIX}whole_frame {self.whole_frame} needs crops 1 and a resize that is "
                                f"a multiple of it, got crops {self.crops} and resize {self.resize}")
        elif self.sample_rate < 1 or self.patch_seconds <= 0:
            problems.append(f"{PREFIX}sample_rate and patch_seconds must be positive")
        if self.output not in OUTPUT_KINDS:
            problems.append(f"{PREFIX}output must be one of {', '.join(OUTPUT_KINDS)}")
        if self.kind not in MODEL_KINDS:
            problems.append(f"{PREFIX}kind must be one of {', '.join(MODEL_KINDS)}")
        if self.background is not None and self.background not in self.labels:
            problems.append(f"{PREFIX}background {self.background!r} is not one of the labels")
        if len(set(self.labels)) != len(self.labels):
            problems.append(f"{PREFIX}labels has duplicates")
        left_out = self.extra.get("left_out")
        if left_out is not None and not (isinstance(left_out, Mapping) and all(
                isinstance(k, str) and isinstance(v, str) for k, v in left_out.items())):
            problems.append(f"{PREFIX}left_out must be a JSON object of label -> reason, got {left_out!r:.80}")
        features = self.extra.get("features")
        if features is not None and not (isinstance(features, Mapping) and isinstance(features.get("dim"), int)
                                         and features["dim"] > 0):
            problems.append(f"{PREFIX}features must be a JSON object with a positive whole \"dim\", "
                            f"got {features!r:.80}")
        support = self.extra.get("fusion_support")
        if support is not None and (isinstance(support, bool) or not (isinstance(support, (int, float))
                                                                      and 0 <= support <= 1)):
            problems.append(f"{PREFIX}fusion_support must be a number from 0 to 1, got {support!r:.80}")
        if problems:
            raise ModelError(f"{source}: {problems[0]}")


def _dump(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _load(key: str, text: str, source: str) -> Any:
    """A metadata value: plain text for the string keys, JSON for the rest.

    `to_metadata` writes strings as they are, so an extra key whose text is not JSON is a string.
    """
    if key in ("output", "kind", "background", "arch", "version"):
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        if key in STRUCTURED_KEYS:
            raise ModelError(f"{source}: {PREFIX}{key} is not valid JSON ({exc.msg})") from exc
        return text


STRUCTURED_KEYS = frozenset(
    {"labels", "clip_len", "size", "resize", "fps", "frame_step", "crops", "whole_frame", "threshold", "train",
     "sample_rate", "patch_seconds", "left_out", "fusion_support", "features", "head"}
)
