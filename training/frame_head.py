"""The default model's head: one logistic regression per tag on a window's stored features.

Every window of a training file is an example: positive for the file's tags (its label and the
instruments its notes say are also in view), negative for every other tag, ignored for tags it
must neither teach nor forbid (a ukulele for the guitar tag). Each group (one shoot) weighs the
same whatever its length, and within a tag the positives weigh as much as the negatives.

A tag ImageNet knows starts from ImageNet's opinion: the weight on its own prior feature (the log
of its ImageNet probability, the last P features) is pulled towards `prior_weight` instead of 0,
so a tag with few examples keeps what the backbone knows and the corpus adds what it does not
(sitar and tabla, the guitar/sitar and hand drum/tabla confusions). The result is one matrix:
scores = sigmoid(features @ weights.T + bias), which the shipped graph runs and `tagger.head`
records for heads applied to stored features.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class HeadConfig:
    """How the head is fitted."""

    l2: float = 1e-2  # penalty on the weights (towards the prior weight for ImageNet tags), per example
    prior_weight: float = 1.0  # where an ImageNet tag's weight on its own log prior starts
    steps: int = 200  # L-BFGS iterations: full batch, convex
    photo_weight: float = 0.5  # a photo group weighs this much against a video group


@dataclass
class Examples:
    """Training windows: features, per-tag targets, weights."""

    features: np.ndarray  # (n, D) float32
    targets: np.ndarray  # (n, K) 1 positive, 0 negative, -1 ignored
    weights: np.ndarray  # (n,) group weights (each group sums to 1, photos scaled)


def fit_head(examples: Examples, prior_index: list[int | None], config: HeadConfig = HeadConfig(),
             l2: list[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Weights (K, D) and bias (K,) of one logistic regression per tag.

    `prior_index[k]`: the feature column holding tag k's log ImageNet prior, or None. `l2[k]`: tag
    k's penalty, where it was chosen per tag (default: `config.l2` for all).
    """
    x = torch.as_tensor(examples.features, dtype=torch.float64)
    n, d = x.shape
    k = examples.targets.shape[1]
    start = torch.as_tensor(prior_head(prior_index, d, config)[0], dtype=torch.float64)
    weights, bias = [], []
    for tag in range(k):
        y = torch.as_tensor(examples.targets[:, tag], dtype=torch.float64)
        keep = y >= 0
        w_row = _balanced(examples.weights, examples.targets[:, tag])
        penalty = config.l2 if l2 is None else l2[tag]
        weights_t, bias_t = _logistic(x[keep], y[keep], torch.as_tensor(w_row[keep.numpy()]), start[tag],
                                      config, penalty)
        weights.append(weights_t)
        bias.append(bias_t)
    return np.stack(weights).astype(np.float32), np.array(bias, np.float32)


def prior_head(prior_index: list[int | None], dim: int, config: HeadConfig = HeadConfig()) -> tuple[np.ndarray, np.ndarray]:
    """The head before any example: each tag's weight on its own prior column, nothing else (a tag
    with no prior scores sigmoid(0) = 0.5 everywhere, below no threshold the recipe can choose)."""
    weights = np.zeros((len(prior_index), dim), np.float32)
    for tag, column in enumerate(prior_index):
        if column is not None:
            weights[tag, column] = config.prior_weight
    return weights, np.zeros(len(prior_index), np.float32)


def _balanced(group_weights: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Example weights with the positives and the negatives of one tag each summing to 1."""
    out = np.zeros(len(target))
    for value in (0, 1):
        mask = target == value
        total = group_weights[mask].sum()
        if total > 0:
            out[mask] = group_weights[mask] / total
    return out


def _logistic(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, start: torch.Tensor, config: HeadConfig,
              l2: float):
    coef = start.clone().requires_grad_(True)
    bias = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([coef, bias], max_iter=config.steps, line_search_fn="strong_wolfe")

    def loss_fn():
        optimiser.zero_grad()
        logits = x @ coef + bias
        loss = (w * torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")).sum()
        loss = loss + l2 * ((coef - start) ** 2).sum()
        loss.backward()
        return loss

    optimiser.step(loss_fn)
    return coef.detach().numpy(), float(bias.detach())


def head_scores(features: np.ndarray, weights: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """(n, K) scores of the head on (n, D) features, as the shipped graph and `tagger.head` compute them."""
    return 1.0 / (1.0 + np.exp(-(features @ weights.T + bias)))
