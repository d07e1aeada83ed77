"""A linear head on a frozen ImageNet backbone, trained on crops of real footage.

Per frame crop the head sees the backbone's pooled features plus what ImageNet already knows about
instruments: the log of each ImageNet-mapped tag's probability (`training/imagenet_map.py`), so a
label the corpus shows rarely still starts from ImageNet's opinion. A softmax over the head's
classes gives each crop's probabilities; a window's score for a class is the mean over its frames
of the highest probability among that frame's crops, so a small or off-centre instrument counts as
much as a centred one.

Training is multiple-instance, because a photo or frame is labelled but its crops are not:
- every crop of an item is either the item's class or nothing (`NoInstrument`): no crop of a bongo
  photo may look like a tabla, no crop of a talking head like anything;
- at least one crop of an instrument item shows it: the best crop's probability of the class.
Classes are weighted so each contributes equally, and every item equally within its class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from training.imagenet_map import class_to_tag_matrix


@dataclass(frozen=True)
class HeadConfig:
    """How the head is trained."""

    weight_decay: float = 1e-3  # L2 on the feature weights: ~30 items per class need a strong prior
    steps: int = 300  # full-batch Adam steps: the loss is flat well before this
    lr: float = 0.01
    seed: int = 0


class CropHead(nn.Module):
    """Per-crop class probabilities from backbone features and ImageNet logits."""

    def __init__(self, feature_dim: int, classes: int, mean: np.ndarray, std: np.ndarray,
                 prior_of_class: np.ndarray | None = None):
        super().__init__()
        self.register_buffer("class_to_tag", torch.tensor(class_to_tag_matrix()))  # (1000, P)
        inputs = feature_dim + self.class_to_tag.shape[1]
        # (P + 1, K): which ImageNet prior (the P tags, then "none of them") each class starts from
        prior = np.zeros((self.class_to_tag.shape[1] + 1, classes), np.float32) if prior_of_class is None else prior_of_class
        self.register_buffer("prior_of_class", torch.as_tensor(prior, dtype=torch.float32))
        self.prior_scale = nn.Parameter(torch.ones(classes))
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).expand(inputs).reshape(1, inputs))
        self.register_buffer("inv_std", torch.as_tensor(1.0 / std, dtype=torch.float32).expand(inputs).reshape(1, inputs))
        self.linear = nn.Linear(inputs, classes)

    def inputs(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Head inputs `(B, D + P)`: features and the log ImageNet tag probabilities."""
        prior = torch.log((torch.softmax(logits, dim=1) @ self.class_to_tag).clamp_min(1e-6))  # (B, P)
        return torch.cat([features, prior], dim=1)

    def prior(self, logits: torch.Tensor) -> torch.Tensor:
        """`(B, K)` log ImageNet probability of each class's mapped tag (0 for unmapped classes)."""
        tags = torch.softmax(logits, dim=1) @ self.class_to_tag  # (B, P)
        rest = (1.0 - tags.sum(dim=1, keepdim=True)).clamp_min(1e-6)  # (B, 1)
        return torch.log(torch.cat([tags, rest], dim=1).clamp_min(1e-6)) @ self.prior_of_class

    def forward(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Class probabilities `(B, K)` of each crop."""
        x = (self.inputs(features, logits) - self.mean) * self.inv_std
        return torch.softmax(self.linear(x) + self.prior_scale * self.prior(logits), dim=1)


@dataclass
class Bags:
    """Training instances: every frame of every item, each a bag of crops."""

    features: torch.Tensor  # (B, C, D) float32
    logits: torch.Tensor  # (B, C, 1000)
    target: torch.Tensor  # (B,) head class index
    weight: torch.Tensor  # (B,) per-bag loss weight


def make_bags(items: list[tuple[np.ndarray, np.ndarray, int]], classes: int) -> Bags:
    """Bags from `(features (W, T, C, D), logits (W, T, C, 1000), class)` per item.

    Identical frames (a photo's repeated frame) count once; each item weighs 1 in total and each
    class the same in total.
    """
    feats, logits, targets, weights = [], [], [], []
    per_class = np.bincount([c for _, _, c in items], minlength=classes).astype(float)
    for f, l, c in items:
        f = f.reshape(-1, *f.shape[2:])  # (W*T, C, D)
        l = l.reshape(-1, *l.shape[2:])
        _, first = np.unique(f[:, :, :8].reshape(len(f), -1), axis=0, return_index=True)
        f, l = f[np.sort(first)], l[np.sort(first)]
        feats.append(f)
        logits.append(l)
        targets.append(np.full(len(f), c))
        weights.append(np.full(len(f), 1.0 / (len(f) * per_class[c])))
    weight = np.concatenate(weights)
    return Bags(torch.from_numpy(np.concatenate(feats).astype(np.float32)),
                torch.from_numpy(np.concatenate(logits).astype(np.float32)),
                torch.from_numpy(np.concatenate(targets)),
                torch.from_numpy(weight / weight.sum()).float())


def bag_loss(probs: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, background: int) -> torch.Tensor:
    """The multiple-instance loss of crop probabilities `(B, C, K)` (see the module docstring)."""
    pick = target.view(-1, 1, 1).expand(-1, probs.shape[1], 1)
    own = probs.gather(2, pick).squeeze(2)  # (B, C): each crop's probability of the bag's class
    nothing = probs[:, :, background]  # (B, C)
    is_background = target == background
    either = torch.where(is_background.view(-1, 1), nothing, own + nothing)
    per_crop = -torch.log(either.clamp_min(1e-7)).mean(dim=1)  # every crop: the class or nothing
    best = -torch.log(own.max(dim=1).values.clamp_min(1e-7))  # one crop at least: the class
    loss = per_crop + torch.where(is_background, torch.zeros_like(best), best)
    return (loss * weight).sum()


def fit_head(bags: Bags, classes: int, background: int, config: HeadConfig = HeadConfig(),
             prior_of_class: np.ndarray | None = None) -> CropHead:
    """Train a CropHead on `bags` (full batch)."""
    torch.manual_seed(config.seed)
    b, c = bags.features.shape[:2]
    probe = CropHead(bags.features.shape[2], classes, np.zeros(1), np.ones(1))
    with torch.no_grad():
        x = probe.inputs(bags.features.reshape(b * c, -1), bags.logits.reshape(b * c, -1))
    mean, std = x.mean(0).numpy(), x.std(0).clamp_min(1e-3).numpy()
    head = CropHead(bags.features.shape[2], classes, mean, std, prior_of_class)
    optimiser = torch.optim.Adam([*head.linear.parameters(), head.prior_scale], lr=config.lr)
    flat_f, flat_l = bags.features.reshape(b * c, -1), bags.logits.reshape(b * c, -1)
    with torch.no_grad():
        x = (head.inputs(flat_f, flat_l) - head.mean) * head.inv_std  # fixed: only the linear layer trains
        prior = head.prior(flat_l)
    for _ in range(config.steps):
        optimiser.zero_grad()
        probs = torch.softmax(head.linear(x) + head.prior_scale * prior, dim=1).view(b, c, -1)
        loss = bag_loss(probs, bags.target, bags.weight, background)
        loss = loss + config.weight_decay * head.linear.weight.pow(2).sum()
        loss.backward()
        optimiser.step()
    return head.eval()


@torch.no_grad()
def window_scores(head: CropHead, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """Per-window class scores `(W, K)`: mean over frames of the max over crops."""
    w, t, c = features.shape[:3]
    probs = head(torch.from_numpy(features.reshape(w * t * c, -1).astype(np.float32)),
                 torch.from_numpy(logits.reshape(w * t * c, -1).astype(np.float32)))
    return probs.view(w, t, c, -1).max(dim=2).values.mean(dim=1).numpy()
