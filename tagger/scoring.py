"""What the one Deriver derives over: the vision model's window scores extended by the add-on heads.

A scan applies the add-on heads of its vision model's feature space (`AddOns`) to every window's
features; their scores are stored as the windows of one more model row (kind "head"), and the
Deriver derives over the extended label set: the vision model's labels, then each add-on label it
does not have. An add-on for a label the model already has replaces that label's scores (and its
threshold). `extend_contract` and `extend_scores` are the one home of that rule; the scan, the
re-scoring from stored features (`Scoring.restore`) and the readers (`tagger.records.rederive`)
all call them, so they derive the same segments from the same rows.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from tagger.contract import ModelContract
from tagger.errors import ModelError
from tagger.heads import Head, addons_for, feature_space
from tagger.schema import WindowArrays
from tagger.step import AUDIO, VIDEO

HEAD_KIND = "head"  # tagger.kind of the model row that holds the add-on scores


@dataclass(frozen=True)
class AddOns:
    """The add-on heads a scan applies to its vision model's features (none, when the folder has
    none for its space)."""

    heads: tuple[Head, ...] = ()
    space: str = ""

    def __bool__(self) -> bool:
        return bool(self.heads)

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(label for head in self.heads for label in head.labels)

    @property
    def thresholds(self) -> dict[str, float]:
        """label -> threshold: the head's own (chosen on held-out examples), else 0.5."""
        return {label: float(head.thresholds.get(label, 0.5)) for head in self.heads for label in head.labels}

    @property
    def sha256(self) -> str:
        """The identity of this set of heads: any head added, removed or taught again changes it."""
        return hashlib.sha256("heads:".join(sorted(h.sha256 for h in self.heads)).encode()).hexdigest()

    @property
    def name(self) -> str:
        return f"heads({','.join(self.labels)})"

    def scores(self, features: np.ndarray) -> np.ndarray:
        """(W, Ka) add-on scores of (W, D) features."""
        return np.concatenate([head.scores(features) for head in self.heads], axis=1)

    def row_meta(self) -> dict:
        """What the add-on model row stores: enough for a reader to derive over the extended labels."""
        return {"tagger.kind": HEAD_KIND, "tagger.space": self.space, "tagger.labels": list(self.labels),
                "tagger.threshold": self.thresholds,
                "tagger.heads": [{"file": h.name, "sha256": h.sha256, "labels": list(h.labels)} for h in self.heads]}

    @classmethod
    def load(cls, folder: Path, contract: ModelContract) -> AddOns:
        """The add-ons in `folder` for `contract`'s feature space (none when it gives no features).

        Raises:
            ModelError: an add-on file is unreadable, of another size than the model's features, or
                a second one for the same label.
        """
        space = feature_space(contract)
        heads = tuple(addons_for(folder, space))
        seen: set[str] = set()
        for head in heads:
            if head.dim != contract.feature_dim:
                raise ModelError(f"{folder / head.name} takes {head.dim} features but {contract.arch} gives "
                                 f"{contract.feature_dim} in space {space}: teach the label again (tagger learn)")
            for label in head.labels:
                if label in seen:
                    raise ModelError(f"two add-on heads in {folder} teach {label}: delete one")
                seen.add(label)
        return cls(heads, space or "")


def stored_addon_labels(meta: dict) -> tuple[tuple[str, ...], dict[str, float]]:
    """The labels and thresholds an add-on model row (AddOns.row_meta) stores."""
    return tuple(meta.get("tagger.labels") or ()), {str(k): float(v) for k, v in (meta.get("tagger.threshold") or {}).items()}


def is_addon_row(meta: dict | None) -> bool:
    return (meta or {}).get("tagger.kind") == HEAD_KIND


def extend_contract(contract: ModelContract, labels: tuple[str, ...], thresholds: dict[str, float]) -> ModelContract:
    """`contract` with the add-on `labels` (and their `thresholds`): its own labels first, then the
    new ones; an add-on label the model has keeps its place and takes the add-on's threshold."""
    if not labels:
        return contract
    return replace(contract, labels=(*contract.labels, *(label for label in labels if label not in contract.labels)),
                   thresholds={**contract.thresholds, **thresholds})


def extend_scores(contract: ModelContract, seen: np.ndarray, labels: tuple[str, ...],
                  added: np.ndarray | None) -> np.ndarray:
    """(W, K') scores over `extend_contract`'s labels: the vision model's (W, K) `seen`, each add-on
    label's column of (W, Ka) `added` replacing the model's or appended after them."""
    if added is None or not labels:
        return seen
    extended = extend_contract(contract, labels, {}).labels
    out = np.zeros((len(seen), len(extended)), np.float32)
    out[:, : seen.shape[1]] = seen
    for column, label in enumerate(labels):
        out[:, extended.index(label)] = added[:, column]
    return out


@dataclass(frozen=True)
class ModelIds:
    """The model rows a video's rows are stored under."""

    streams: dict[str, int]  # stream (VIDEO, AUDIO) -> the model its windows are stored under
    heads: int | None  # the add-on row whose windows hold the add-on scores; None without add-ons
    tags: int  # the identity (vision + sound + heads) its segments and video row name


@dataclass(frozen=True)
class Restored:
    """One stored video's windows, scored again without decoding, ready to derive and store."""

    starts: np.ndarray  # (W,)
    ends: np.ndarray  # (W,)
    seen: np.ndarray  # (W, K) the vision model's scores
    added: np.ndarray | None  # (W, Ka) the add-on scores
    heard: np.ndarray | None  # (W, Ka) the sound model's scores, as stored
    rescored: np.ndarray | None = None  # window ids whose vision scores `seen` replaces (a new vision model)


@dataclass(frozen=True)
class Scoring:
    """How one vision model and its add-ons score windows: decoded ones, or stored features.

    `own_head` is the model's own head (`tagger.head`): with it, windows another model of the same
    feature space stored are scored as this model would score them.
    """

    contract: ModelContract
    addons: AddOns = field(default_factory=AddOns)
    own_head: Head | None = None
    extended: ModelContract = field(init=False, compare=False)  # the labels the Deriver derives over

    def __post_init__(self) -> None:
        object.__setattr__(self, "extended", extend_contract(self.contract, self.addons.labels, self.addons.thresholds))

    @classmethod
    def of_model(cls, contract: ModelContract, addons: AddOns | None = None) -> Scoring:
        return cls(contract, addons or AddOns(), Head.of_model(contract))

    def added(self, features: np.ndarray | None) -> np.ndarray | None:
        """(W, Ka) add-on scores of freshly decoded windows' features; None without add-ons."""
        return self.addons.scores(features) if self.addons and features is not None else None

    def extend(self, seen: np.ndarray, added: np.ndarray | None) -> np.ndarray:
        """The scores the Deriver takes: see `extend_scores`."""
        return extend_scores(self.contract, seen, self.addons.labels, added)

    def restore(self, stored: dict[int, WindowArrays], ids: ModelIds, vision_ids: frozenset[int],
                rescore: bool) -> Restored | str:
        """A stored video's windows scored for `ids`, or why they cannot be without decoding.

        `stored`: model id -> its windows (with features when `rescore`); `vision_ids`: the vision
        models whose features are of this model's space. Without `rescore` (same models, other
        segment settings) the stored scores are used as they are; with it, the add-ons (and, when
        another model of the space stored the windows, this model's own head) score the stored
        features.
        """
        heard = stored.get(ids.streams.get(AUDIO, -1))
        if not rescore:
            seen = stored.get(ids.streams[VIDEO])
            added = stored.get(ids.heads) if ids.heads is not None else None
            if seen is None or (ids.heads is not None and added is None):
                return "its windows are not stored"
            return Restored(seen.starts, seen.ends, seen.scores, added.scores if added else None,
                            heard.scores if heard else None)
        vision_id = next((model_id for model_id in stored if model_id in vision_ids), None)
        if vision_id is None:
            return "its windows were not scored by a model of this feature space"
        vision = stored[vision_id]
        changed = vision_id != ids.streams[VIDEO]
        if changed and self.own_head is None:
            return f"{self.contract.arch} records no head of its own (tagger.head) to score another model's features"
        if (changed or self.addons) and vision.features is None:
            return "scanned without features"
        if heard is not None and len(heard.starts) != len(vision.starts):
            return "its sound windows are not those of its vision windows"
        seen = self.own_head.scores(vision.features) if changed else vision.scores
        return Restored(vision.starts, vision.ends, seen, self.added(vision.features),
                        heard.scores if heard else None, vision.ids if changed else None)
