"""A logistic head for one label, fitted in numpy, checked on held-out groups, threshold chosen there.

`fit_logistic` fits sigmoid(x @ w + b) by L-BFGS on standardised features (each class
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
MAX_STEPS = 500  # L-BFGS steps; a few dozen reach the minimum on the sets tried, the cap bounds an odd one
MEMORY = 10  # the curvature pairs L-BFGS keeps
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
    sign = np.where(y, 1.0, -1.0)
    transposed = np.ascontiguousarray(z.T)  # both products row-major: 2.6x faster with OpenBLAS's threads

    def loss_and_gradient(theta: np.ndarray) -> tuple[float, np.ndarray]:
        margin = sign * (z @ theta)
        loss = (weight * np.logaddexp(0.0, -margin)).sum() + 0.5 * (ridge * theta * theta).sum()
        return float(loss), transposed @ (-weight * sign * _sigmoid(-margin)) + ridge * theta

    theta = _lbfgs(loss_and_gradient, np.zeros(z.shape[1]) if start is None else start.copy())
    w = theta[:-1] / scale
    return Fitted(w.astype(np.float32), float(theta[-1] - (w * mean).sum())), theta


def _lbfgs(objective, theta: np.ndarray) -> np.ndarray:
    """Minimise a smooth convex `objective` (theta -> (value, gradient)) by L-BFGS with a
    backtracking line search. Each step costs two products with the (n, D) data, where Newton's
    costs a (D, D) Hessian (seconds at D = 274 and 5,000 windows on two cores)."""
    value, gradient = objective(theta)
    steps: list[tuple[np.ndarray, np.ndarray]] = []
    for _ in range(MAX_STEPS):
        direction = -gradient
        history = []
        for s, g in reversed(steps):  # the two-loop recursion: direction = -H gradient
            a = (s @ direction) / (g @ s)
            direction = direction - a * g
            history.append((s, g, a))
        if steps:
            s, g = steps[-1]
            direction = direction * (s @ g) / (g @ g)
        else:
            direction = direction / max(1.0, float(np.abs(gradient).max()))
        for s, g, a in reversed(history):
            direction = direction + s * (a - (g @ direction) / (g @ s))
        slope = float(gradient @ direction)
        if slope >= 0:  # not a descent direction (rounding): start again from the gradient
            steps, direction, slope = [], -gradient, -float(gradient @ gradient)
        size = 1.0
        for _ in range(40):
            trial = theta + size * direction
            new_value, new_gradient = objective(trial)
            if new_value <= value + 1e-4 * size * slope:
                break
            size /= 2
        if (new_gradient - gradient) @ (trial - theta) > 1e-16:
            steps = [*steps[-(MEMORY - 1):], (trial - theta, new_gradient - gradient)]
        done = value - new_value <= 1e-10 * max(1.0, abs(value))  # scores then within 1e-4 of the minimum's
        theta, value, gradient = trial, new_value, new_gradient
        if done or np.abs(gradient).max() < 1e-9:
            break
    return theta


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
