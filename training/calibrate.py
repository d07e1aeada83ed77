"""Thresholds chosen on held-out scores, and the per-label table that measures them.

Scores here are per item: an item (a photo, or a video) gets a label's score as the best of its
windows, which is what decides whether a scan tags it. Everything is computed on scores of items
the scoring head never trained on: out-of-fold scores (each from a head fitted without the item's
group) and scores of clips outside the corpus.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ThresholdRule:
    """How a tag's threshold follows from held-out negatives."""

    floor: float = 0.5  # never below: real archives hold far more kinds of non-instrument footage than any corpus
    ceiling: float = 0.9  # never above: a label nothing reaches is a label nobody gets
    negatives_over: float = 0.01  # at most this share of held-out negatives may reach the threshold (0.5%: sitar 0.9, its recall 80% on the test groups)


def choose_threshold(negatives: np.ndarray, rule: ThresholdRule = ThresholdRule()) -> float:
    """The lowest threshold in [floor, ceiling] that at most `negatives_over` of `negatives` reach."""
    if len(negatives) == 0:
        return rule.floor
    allowed = int(np.floor(rule.negatives_over * len(negatives)))
    ranked = np.sort(negatives)[::-1]
    above = float(ranked[allowed]) if allowed < len(ranked) else 0.0  # the highest score that must stay below
    return float(np.clip(np.nextafter(np.float32(above), np.float32(1.0)), rule.floor, rule.ceiling))


def thresholds_for(scores: np.ndarray, classes: list[str], truth: list[str], tags: list[str],
                   rule: ThresholdRule = ThresholdRule()) -> dict[str, float]:
    """Per tag: `choose_threshold` over the held-out items (rows of `scores`) not of that tag."""
    truth_array = np.array(truth)
    # rounded up, never down: a threshold rounded down could let more negatives reach it than the rule allows
    return {tag: math.ceil(choose_threshold(scores[truth_array != tag, classes.index(tag)], rule) * 1000) / 1000
            for tag in tags}


def per_label_table(scores: np.ndarray, classes: list[str], truth: list[str], tags: list[str],
                    thresholds: dict[str, float], background: str) -> dict:
    """Recall, precision and confusions per tag, and false tags on the background, at `thresholds`.

    Args:
        scores: (items, classes) best-window scores.
        truth: each item's head class (a tag, a never-tagged class, or the background).
    """
    given = {tag: scores[:, classes.index(tag)] >= thresholds[tag] for tag in tags}  # tag -> (items,) bool
    rows = {}
    for tag in tags:
        positives = np.array([t == tag for t in truth])
        confused = Counter(other for other in tags if other != tag for i in np.flatnonzero(positives) if given[other][i])
        rows[tag] = {
            "items": int(positives.sum()),
            "recall": _ratio(given[tag][positives].sum(), positives.sum()),
            "precision": _ratio(given[tag][positives].sum(), given[tag].sum()),
            "tagged_wrongly": int((given[tag] & ~positives).sum()),
            "also_tagged": dict(confused.most_common()),
        }
    negatives = np.array([t == background for t in truth])
    any_tag = np.any(np.stack([given[tag] for tag in tags]), axis=0)
    players = np.array([t in tags for t in truth])
    own = np.array([given[t][i] if t in tags else False for i, t in enumerate(truth)])
    wrong = np.array([any(given[o][i] for o in tags if o != t) for i, t in enumerate(truth)])
    traps = ~players & ~negatives
    return {
        "labels": rows,
        "players": int(players.sum()),
        "players_with_their_label": _ratio(own[players].sum(), players.sum()),
        "players_with_a_wrong_label": _ratio(wrong[players].sum(), players.sum()),
        "no_instrument": int(negatives.sum()),
        "no_instrument_with_any_tag": _ratio(any_tag[negatives].sum(), negatives.sum()),
        "other_instruments": int(traps.sum()),
        "other_instruments_with_any_tag": _ratio(any_tag[traps].sum(), traps.sum()),
    }


def _ratio(part: float, whole: float) -> float | None:
    return round(float(part) / float(whole), 3) if whole else None


def format_table(table: dict, title: str) -> str:
    """The per-label table as aligned text."""
    lines = [title, f"{'label':<18} {'items':>5} {'recall':>7} {'precision':>9} {'wrong':>5}  also tagged"]
    for tag, row in table["labels"].items():
        also = ", ".join(f"{k} {v}" for k, v in row["also_tagged"].items()) or "-"
        lines.append(f"{tag:<18} {row['items']:>5} {_pct(row['recall']):>7} {_pct(row['precision']):>9} "
                     f"{row['tagged_wrongly']:>5}  {also}")
    lines.append(f"players with their label: {_pct(table['players_with_their_label'])} of {table['players']}; "
                 f"with a wrong label: {_pct(table['players_with_a_wrong_label'])}")
    lines.append(f"NoInstrument items with any tag: {_pct(table['no_instrument_with_any_tag'])} of "
                 f"{table['no_instrument']}; other instruments (never tagged) with a tag: "
                 f"{_pct(table['other_instruments_with_any_tag'])} of {table['other_instruments']}")
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"
