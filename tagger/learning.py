"""`tagger learn LABEL`: a head for one label taught from examples, on stored features only.

The examples (`tagger.examples`) name stored windows; without negatives, a sample of the other
stored windows of the same feature space stands for "everything else" (the positives' own videos
left out). A logistic head is fitted in numpy (`tagger.logistic`), every window is scored by a
head that never saw its video, the threshold is chosen on those held-out scores, and the head fitted
on all the examples is written as an add-on file (`LABEL.head.json` in the heads folder) with what
it was taught on and how it did held out. It is scored on every stored window to say what it
would tag. Nothing is decoded: the next scan or `tagger retag` applies it to the stored videos
from their features, and scans apply it to new videos as they decode them.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, replace

import numpy as np

from tagger.config import resolve_heads
from tagger.deriver import Deriver
from tagger.errors import ModelError, UsageError
from tagger.examples import ExampleWindows, example_windows, named_examples
from tagger.feature_index import FeatureIndex
from tagger.heads import Head, feature_space, label_file_name, write_addon
from tagger.identity import stored_models
from tagger.logistic import Fitted, choose_threshold, cross_validate, fit_logistic
from tagger.model import load_model
from tagger.records import reading

LABEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # also its add-on's file name
MIN_POSITIVES = 3
SAMPLE_NEGATIVES = 5000  # windows standing for "everything else" when no negative is named; seeded


@dataclass(frozen=True)
class LearnSettings:
    """What `tagger learn` is told."""

    db: str
    label: str
    positive: tuple[str, ...] = ()  # PATH, PATH@START-END or FOLDER
    negative: tuple[str, ...] = ()
    positive_query: tuple[str, ...] = ()  # label=...,path=...,min-score=...
    negative_query: tuple[str, ...] = ()
    model: str | None = None  # the vision model whose feature space the head is for; None: the default
    heads: str | None = None  # where the add-on is written; None: $TAGGER_HEADS, else the user data directory's

    def __post_init__(self) -> None:
        if not LABEL_NAME.fullmatch(self.label):
            raise UsageError(f"label {self.label!r} must be 1-64 letters, digits, '_', '-' or '.', starting with a "
                             "letter or digit (it names the add-on file)")


@dataclass(frozen=True)
class Lesson:
    """What `tagger learn` did: the counts, the held-out check, what the head would tag, the file."""

    label: str
    positives: int  # examples
    positive_windows: int
    positive_videos: int
    negative_windows: int
    negative_videos: int
    sampled: bool  # the negatives are a sample of the archive, not named
    held_out_by: str  # "video", or "example" when every positive is in one video
    folds: int
    penalty: float
    threshold: float
    precision: float  # held out, over windows
    recall: float
    examples_found: int  # positive examples with a held-out window over the threshold
    negative_videos_tagged: int
    would_tag_videos: int
    would_tag_segments: int
    would_tag_seconds: float
    featured_videos: int  # stored videos with features of this space
    path: str  # the add-on file
    replaced: bool  # a head for this label was there before
    seconds: float


def learn(settings: LearnSettings) -> Lesson:
    """Teach `settings.label`; see the module docstring.

    Raises:
        UsageError: bad examples (unknown paths, spans outside a video, videos without features or
            with features of another space), fewer than MIN_POSITIVES positives, no negatives.
        ModelError: the model gives no features.
        DatabaseError: no database.
    """
    began = time.monotonic()
    model = load_model(settings.model, "cpu")
    space = feature_space(model.contract)
    if model.contract.kind != "video" or space is None:
        raise ModelError(f"{model.path} gives no features (tagger.features): learn needs a vision model that does")
    if settings.label == model.contract.background:
        raise UsageError(f"{settings.label} is {model.name}'s background label, which is never tagged: teach another")
    with reading(settings.db) as conn:
        known = stored_models(conn)
        named = named_examples(conn, list(settings.positive), list(settings.positive_query), "--positive")
        if len(named) < MIN_POSITIVES:
            raise UsageError(f"{settings.label} has {len(named)} positive example{'s' * (len(named) != 1)}: give at "
                             f"least {MIN_POSITIVES} (--positive PATH[@START-END], --positive-query label=...,path=...)")
        positives = example_windows(conn, named, known, space, model.name)
        negatives_named = named_examples(conn, list(settings.negative), list(settings.negative_query), "--negative")
        negatives = example_windows(conn, negatives_named, known, space, model.name) if negatives_named else None
        with FeatureIndex.opened(conn, settings.db, space, model.contract.feature_dim,
                                 known.vision_ids(space)) as index:
            if negatives is None:
                negatives = _sampled_negatives(index, positives)
            else:  # a window named both ways counts as a positive
                keep = ~np.isin(negatives.window_ids, positives.window_ids)
                negatives = ExampleWindows(negatives.features[keep], negatives.video_ids[keep],
                                           negatives.example[keep], negatives.window_ids[keep])
            if not len(negatives.features):
                raise UsageError(f"no negative windows to learn {settings.label} against: name some with --negative "
                                 "or --negative-query")
            lesson, head = _fit(positives, negatives)
            lesson["positives"] = len(named)
            tagged = _would_tag(index, head, lesson["threshold"], settings.label, model.contract)
    folder = resolve_heads(settings.heads)
    replaced = (folder / label_file_name(settings.label)).is_file()
    info = {"taught_at": time.strftime("%Y-%m-%d %H:%M:%S"), "model": model.name, "examples": [*settings.positive,
            *settings.positive_query], "negatives": [*settings.negative, *settings.negative_query] or "sampled",
            **{k: v for k, v in lesson.items() if k != "threshold"}, **tagged}
    written = write_addon(Head((settings.label,), space, head.weights[None, :], np.array([head.bias], np.float32),
                               {settings.label: lesson["threshold"]}, info=info), folder)
    return Lesson(label=settings.label, path=str(written), replaced=replaced, seconds=time.monotonic() - began,
                  **lesson, **tagged)


def _sampled_negatives(index: FeatureIndex, positives: ExampleWindows) -> ExampleWindows:
    """Up to SAMPLE_NEGATIVES windows of the index outside the positives' videos."""
    candidates = np.flatnonzero(index.live & ~np.isin(index.rows["video"], positives.video_ids))
    if len(candidates) > SAMPLE_NEGATIVES:
        candidates = np.sort(np.random.default_rng(0).choice(candidates, SAMPLE_NEGATIVES, replace=False))
    rows = index.rows[candidates]
    return ExampleWindows(index.features(candidates), rows["video"].astype(np.int64), np.full(len(rows), -1),
                          rows["window"])


def _fit(positives: ExampleWindows, negatives: ExampleWindows) -> tuple[dict, Fitted]:
    """Cross-validate by video (by example when every positive is in one video), choose the
    threshold held out, fit on everything."""
    x = np.concatenate([positives.features, negatives.features])
    y = np.r_[np.ones(len(positives.features), bool), np.zeros(len(negatives.features), bool)]
    by_example = positives.videos == 1
    positive_groups = -1 - positives.example if by_example else positives.video_ids
    groups = np.r_[positive_groups, negatives.video_ids]
    held = cross_validate(x, y, groups)
    threshold = choose_threshold(held.scores, y)
    passed = held.scores >= threshold
    found = {int(e) for e in positives.example[passed[: len(positives.features)]]}
    negative_passed = passed[len(positives.features):]
    head, _ = fit_logistic(x, y, held.penalty)
    true = int((passed & y).sum())
    lesson = {
        "positive_windows": int(y.sum()),
        "positive_videos": positives.videos, "negative_windows": int((~y).sum()), "negative_videos": negatives.videos,
        "sampled": bool((negatives.example < 0).all()), "held_out_by": "example" if by_example else "video",
        "folds": held.folds, "penalty": held.penalty, "threshold": round(threshold, 4),
        "precision": round(true / max(1, int(passed.sum())), 4), "recall": round(true / max(1, int(y.sum())), 4),
        "examples_found": len(found),
        "negative_videos_tagged": len({int(v) for v in negatives.video_ids[negative_passed]}),
    }
    return lesson, head


def _would_tag(index: FeatureIndex, head: Fitted, threshold: float, label: str, contract) -> dict:
    """The videos, segments and seconds the head would tag across the stored windows, with the
    scan's default segment rules."""
    live = np.flatnonzero(index.live)
    rows = index.rows[live]
    scores = 1.0 / (1.0 + np.exp(-index.linear(head.weights[None, :], np.array([head.bias]))[live, 0]))
    order = np.lexsort((rows["start"], rows["video"]))
    rows, scores = rows[order], scores[order]
    starts = np.r_[0, np.flatnonzero(np.diff(rows["video"])) + 1] if len(rows) else np.zeros(0, int)
    deriver = Deriver(replace(contract, labels=(label,), thresholds={label: threshold}, background=None))
    videos = segments = 0
    seconds = 0.0
    for first, last in zip(starts, np.r_[starts[1:], len(rows)]):
        if scores[first:last].max() < threshold:
            continue
        found = deriver.segments(rows["start"][first:last], rows["end"][first:last], scores[first:last, None])
        videos += bool(found)
        segments += len(found)
        seconds += sum(s.duration for s in found)
    return {"would_tag_videos": videos, "would_tag_segments": segments, "would_tag_seconds": round(seconds, 1),
            "featured_videos": len(starts)}

