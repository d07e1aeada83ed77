"""A logistic head for one label, fitted in numpy, checked on held-out groups, threshold chosen there.

`fit_logistic` fits sigmoid(x @ w + b) by Newton's method on standardised features (each class
weighs half, however few positives there are; an L2 penalty keeps a handful of examples from being
learnt by heart) and returns the weights in the features' own units, as `tagger.heads.Head` scores
them. `cross_validate` scores every window by a head fitted without its group (a video, so that
neighbouring windows of one video never judge each other), for each penalty in `PENALTIES`; the
penalty with the lowest held-out loss wins. `choose_threshold` picks the threshold with the best
F1 on those held-out scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PENALTIES = (1.0, 0.1, 0.01, 0.001)  # L2 on standardised features, tried strongest first
MAX_FOLDS = 5
NEWTON_STEPS = 30  # converges in under 10 on every set tried; the cap bounds the time
THRESHOLD_RANGE = (0.05, 0.95)  # a threshold outside it would tag almost everything or almost nothing


@dataclass(frozen=True)
class Fitted:
    """sigmoid(features @ weights + bias), in the features' own units."""

    weights: np.ndarray  # (D,) float32
    bias: float

    def scores(self, features: np.ndarray) -> np.ndarray:
        return _sigmoid(np.asarray(features, np.float32) @ self.weights + self.bias)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -40, 40)))


def fit_logistic(x: np.ndarray, y: np.ndarray, penalty: float, start: np.ndarray | None = None) -> tuple[Fitted, np.ndarray]:
    """Fit on (n, D) `x` and (n,) bool `y`; returns the head and its standardised parameters (to
    start the next fit from)."""
    x = np.asarray(x, np.float64)
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    z = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])  # (n, D + 1): the last column is the bias
    weight = np.where(y, 0.5 / max(1, y.sum()), 0.5 / max(1, (~y).sum()))  # each class weighs half
    ridge = np.full(z.shape[1], penalty)
    ridge[-1] = 0.0  # the bias is not penalised
    def loss(theta: np.ndarray) -> float:
        margin = np.where(y, 1.0, -1.0) * (z @ theta)
        return float((weight * np.logaddexp(0.0, -margin)).sum() + 0.5 * (ridge * theta * theta).sum())

    theta = np.zeros(z.shape[1]) if start is None else start.copy()
    current = loss(theta)
    for _ in range(NEWTON_STEPS):
        p = _sigmoid(z @ theta)
        gradient = z.T @ (weight * (p - y)) + ridge * theta
        hessian = (z * (weight * p * (1 - p))[:, None]).T @ z + np.diag(ridge + 1e-9)
        step = np.linalg.solve(hessian, gradient)
        for _ in range(20):  # halve the step until the loss falls: Newton overshoots on separable sets
            trial = loss(theta - step)
            if trial <= current:
                break
            step = step / 2
        theta, current = theta - step, min(current, trial)
        if np.abs(step).max() < 1e-6:
            break
    w = theta[:-1] / scale
    return Fitted(w.astype(np.float32), float(theta[-1] - (w * mean).sum())), theta


@dataclass(frozen=True)
class HeldOut:
    """Every window's score by a head that never saw its group."""

    scores: np.ndarray  # (n,)
    folds: int
    penalty: float  # the one chosen


def folds_of(groups: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(n,) fold of each window: whole groups per fold, the groups with positives spread over every
    fold first (so each fold holds out some), at most MAX_FOLDS folds."""
    positive = sorted({int(g) for g in groups[y]})
    others = sorted({int(g) for g in groups} - set(positive))
    count = min(MAX_FOLDS, len(positive))
    fold = {g: i % count for i, g in enumerate(positive)}
    fold.update({g: i % count for i, g in enumerate(others)})
    return np.array([fold[int(g)] for g in groups])


def cross_validate(x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> HeldOut:
    """Held-out scores of every window, folds by `groups`, the penalty of lowest held-out loss."""
    folds = folds_of(groups, y)
    count = int(folds.max()) + 1
    weight = np.where(y, 0.5 / max(1, y.sum()), 0.5 / max(1, (~y).sum()))
    best: HeldOut | None = None
    best_loss = np.inf
    starts: dict[int, np.ndarray] = {}
    for penalty in PENALTIES:
        scores = np.zeros(len(y))
        for fold in range(count):
            fit, inside = folds != fold, folds == fold
            head, starts[fold] = fit_logistic(x[fit], y[fit], penalty, starts.get(fold))
            scores[inside] = head.scores(x[inside])
        clipped = np.clip(scores, 1e-6, 1 - 1e-6)
        loss = -(weight * np.where(y, np.log(clipped), np.log(1 - clipped))).sum()
        if loss < best_loss - 1e-9:
            best, best_loss = HeldOut(scores, count, penalty), loss
    return best


def choose_threshold(scores: np.ndarray, y: np.ndarray) -> float:
    """The threshold of best F1 on held-out `scores`: halfway between the lowest score it tags and
    the highest it does not, kept inside THRESHOLD_RANGE."""
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], y[order]
    tagged = np.arange(1, len(ranked) + 1)
    true = np.cumsum(hits)
    f1 = 2 * true / (tagged + max(1, y.sum()))
    last = np.flatnonzero(np.r_[ranked[1:] < ranked[:-1], True])  # cut only between different scores
    cut = last[np.argmax(f1[last])]
    below = ranked[cut + 1] if cut + 1 < len(ranked) else 0.0
    return float(np.clip((ranked[cut] + below) / 2, *THRESHOLD_RANGE))
