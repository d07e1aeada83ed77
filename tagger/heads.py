"""Heads on stored features: the default model's own head, and labels users teach (`tagger learn`).

A model that gives `features` (`tagger.features`: {"dim": D, "space": ID}) says what space they
live in: the backbone, pooling, projection and sampling that made them. A head is a linear map of
features of one space to per-label scores, sigmoid(features @ weights.T + bias). The model's own
head is recorded in its metadata (`tagger.head`), so stored windows can be scored again by a new
default model with the same backbone without decoding; a taught label is an add-on file
(`LABEL.head.json` in the heads folder), applied to every window of its space by the next scan or
`tagger retag`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tagger.contract import ModelContract
from tagger.errors import ModelError

ENV_HEADS = "TAGGER_HEADS"
ADDON_SUFFIX = ".head.json"
ADDON_FORMAT = 1  # raise when the add-on file's layout changes


def default_heads_dir() -> Path:
    """The heads folder: $TAGGER_HEADS, else `heads/` in the user data directory."""
    if os.environ.get(ENV_HEADS):
        return Path(os.environ[ENV_HEADS]).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("tagger", appauthor=False)) / "heads"


def encode_matrix(matrix: np.ndarray) -> str:
    """A float32 matrix as base64 of its little-endian bytes (how heads store weights)."""
    return base64.b64encode(np.ascontiguousarray(matrix, dtype="<f4").tobytes()).decode("ascii")


def decode_matrix(text: str, shape: tuple[int, ...]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f4").reshape(shape).astype(np.float32)


def feature_space(contract: ModelContract) -> str | None:
    """The id of the space a model's features live in, or None when it gives none."""
    features = contract.extra.get("features")
    if not isinstance(features, dict) or not contract.feature_dim:
        return None
    return str(features.get("space") or "")


@dataclass(frozen=True)
class Head:
    """Per-label scores from features of one space: sigmoid(features @ weights.T + bias)."""

    labels: tuple[str, ...]
    space: str
    weights: np.ndarray  # (K, D) float32
    bias: np.ndarray  # (K,) float32
    thresholds: dict[str, float] = field(default_factory=dict)
    name: str = "head"
    sha256: str = ""  # of the add-on file (empty for a model's own head)
    info: dict = field(default_factory=dict)  # what it was taught on, shown by `tagger models`

    @property
    def dim(self) -> int:
        return int(self.weights.shape[1])

    def scores(self, features: np.ndarray) -> np.ndarray:
        """(n, K) scores of (n, D) features (float16 as stored, or float32)."""
        logits = np.asarray(features, dtype=np.float32) @ self.weights.T + self.bias
        return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)

    @classmethod
    def of_model(cls, contract: ModelContract) -> Head | None:
        """The model's own head (`tagger.head`), or None when its metadata records none."""
        recorded, space = contract.extra.get("head"), feature_space(contract)
        if not isinstance(recorded, dict) or space is None:
            return None
        k, d = len(contract.labels), contract.feature_dim
        try:
            return cls(contract.labels, space, decode_matrix(recorded["weights"], (k, d)),
                       np.asarray(recorded["bias"], dtype=np.float32).reshape(k), dict(contract.thresholds),
                       name=contract.arch)
        except (KeyError, ValueError, TypeError) as exc:
            raise ModelError(f"tagger.head is malformed ({exc}): re-export the model") from exc

    def to_json(self) -> dict:
        """The add-on file's content."""
        return {"format": ADDON_FORMAT, "labels": list(self.labels), "space": self.space, "dim": self.dim,
                "weights": encode_matrix(self.weights), "bias": [float(b) for b in self.bias],
                "thresholds": self.thresholds, "info": self.info}


def label_file_name(label: str) -> str:
    return f"{label}{ADDON_SUFFIX}"


def write_addon(head: Head, folder: Path) -> Path:
    """Write `head` (one taught label) into `folder`; returns the file."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / label_file_name(head.labels[0])
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(head.to_json(), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(partial, path)
    return path


def read_addon(path: Path) -> Head:
    """One add-on file.

    Raises:
        ModelError: the file is not a head tagger wrote.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        k, d = len(data["labels"]), int(data["dim"])
        if data.get("format") != ADDON_FORMAT:
            raise ValueError(f"format {data.get('format')!r}, this tagger reads {ADDON_FORMAT}")
        return Head(tuple(data["labels"]), str(data["space"]), decode_matrix(data["weights"], (k, d)),
                    np.asarray(data["bias"], dtype=np.float32).reshape(k),
                    {str(a): float(b) for a, b in data.get("thresholds", {}).items()}, name=path.name,
                    sha256=hashlib.sha256(path.read_bytes()).hexdigest(), info=dict(data.get("info") or {}))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"{path} is not a head tagger wrote ({exc}): delete it or teach the label again") from exc


def addons_for(folder: Path, space: str | None) -> list[Head]:
    """The add-on heads in `folder` for features of `space`, by label (none when `space` is None)."""
    if space is None or not folder.is_dir():
        return []
    found = [read_addon(path) for path in sorted(folder.glob(f"*{ADDON_SUFFIX}"))]
    return [head for head in found if head.space == space]
