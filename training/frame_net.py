"""The default model's graph: EfficientNet-Lite0 run once over each whole frame, window features, a head.

A window is T frames, each scaled to a short side of 224 and trimmed to multiples of 32
(`tagger.whole_frame`), input uint8 `(N, T, H, W, 3)`. The backbone runs once over each frame: it
is convolutional, so the 7x7 cells of its last feature map that a 224x224 crop would have covered
are pooled from that one map instead of computing three overlapping crops (a 16:9 frame: 384
columns of work instead of 672). Per frame:
- `mean`: the feature map averaged over the whole frame (1280);
- `best`: every 7x7 region averaged (a crop's footprint, one cell apart), then the highest value of
  each channel over the regions (1280): a small or off-centre instrument still shows;
- `prior`: the ImageNet classifier on each region, the probability of each instrument tag
  (`training/imagenet_map.py`: summed class probabilities), its highest over the regions (P).
The window's features are the mean over its frames of [mean, best] projected to `dim` values
(a linear map fitted on the corpus: `Projection`), then the log of the frames' mean prior: what
the scan stores (`features`), what `tagger learn` and `tagger similar` use, and all the head sees.
The head is linear on those features with a sigmoid per label (`probs`), so the same head applied
to stored features gives the same scores without decoding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training.imagenet_map import class_to_tag_matrix
from training.pretrained import FEATURE_DIM, EfficientNetLite0

REGION = 7  # feature-map cells a 224x224 crop covers at stride 32
STRIDE = 32  # the backbone's total stride: frames are trimmed to multiples of it
PRIOR_FLOOR = 1e-6  # log of a prior is taken at least at this probability
SPANNED = 1e-4  # a component whose spread is below this share of the first one's is noise


@dataclass(frozen=True)
class Projection:
    """A linear map of the pooled [mean, best] features (2 x 1280) to `dim` values: x -> (x - mean) @ matrix."""

    mean: np.ndarray  # (2560,)
    matrix: np.ndarray  # (2560, dim)

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])

    @classmethod
    def identity(cls) -> Projection:
        return cls(np.zeros(2 * FEATURE_DIM, np.float32), np.eye(2 * FEATURE_DIM, dtype=np.float32))

    @classmethod
    def fit(cls, pooled: np.ndarray, dim: int) -> Projection:
        """PCA of `pooled` (n, 2560) to `dim` components, each scaled to unit variance. A component
        the examples do not span (fewer examples than `dim`, or copies) is all zeros: scaling its
        rounding noise up would give unseen windows huge values there."""
        mean = pooled.mean(axis=0)
        centred = (pooled - mean).astype(np.float64)
        _, singular, vt = np.linalg.svd(centred, full_matrices=False)
        matrix = np.zeros((pooled.shape[1], dim))
        scale = singular[:dim] / np.sqrt(max(1, len(pooled) - 1))
        spanned = scale > (scale[0] if len(scale) else 0.0) * SPANNED
        matrix[:, : len(scale)][:, spanned] = vt[: len(scale)][spanned].T / scale[spanned]
        return cls(mean.astype(np.float32), matrix.astype(np.float32))


class WindowFeatures(nn.Module):
    """uint8 windows `(N, T, H, W, 3)` -> features `(N, dim + P)`; see the module docstring."""

    def __init__(self, backbone: EfficientNetLite0, projection: Projection):
        super().__init__()
        self.backbone = backbone
        self.register_buffer("class_to_tag", torch.tensor(class_to_tag_matrix()))  # (1000, P)
        self.register_buffer("centre", torch.as_tensor(projection.mean))
        self.register_buffer("projection", torch.as_tensor(projection.matrix))

    @property
    def dim(self) -> int:
        return int(self.projection.shape[1] + self.class_to_tag.shape[1])

    def frame_parts(self, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per frame: pooled [mean, best] `(N, T, 2560)` and the prior `(N, T, P)`."""
        n, t = windows.shape[0], windows.shape[1]
        frames = windows.flatten(0, 1).permute(0, 3, 1, 2).float()  # (N*T, 3, H, W)
        frames = frames * (1.0 / 128.0) - (127.0 / 128.0)  # the TF Lite preprocessing
        cells = self.backbone.feature_map(frames)  # (N*T, 1280, H/32, W/32)
        mean = cells.mean(dim=(2, 3))  # (N*T, 1280)
        regions = F.avg_pool2d(cells, REGION, stride=1)  # (N*T, 1280, h, w): one value per crop footprint
        best = regions.amax(dim=(2, 3))  # (N*T, 1280)
        fc = self.backbone._fc
        logits = F.conv2d(regions, fc.weight[:, :, None, None], fc.bias)  # (N*T, 1000, h, w)
        tags = torch.einsum("bchw,cp->bphw", torch.softmax(logits, dim=1), self.class_to_tag)  # (N*T, P, h, w)
        prior = tags.amax(dim=(2, 3))  # (N*T, P)
        pooled = torch.cat([mean, best], dim=1)  # (N*T, 2560)
        return pooled.reshape(n, t, -1), prior.reshape(n, t, -1)

    def combine(self, pooled: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        """Window features `(N, dim + P)` from per-frame parts `(N, T, 2560)` and `(N, T, P)`."""
        projected = (pooled.mean(dim=1) - self.centre) @ self.projection  # (N, dim)
        return torch.cat([projected, torch.log(prior.mean(dim=1).clamp_min(PRIOR_FLOOR))], dim=1)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        return self.combine(*self.frame_parts(windows))


class LinearHead(nn.Module):
    """Scores `(N, K)` = sigmoid(features @ weights.T + bias): what `tagger.head` records."""

    def __init__(self, weights: np.ndarray, bias: np.ndarray):
        super().__init__()
        self.register_buffer("weights", torch.as_tensor(weights, dtype=torch.float32))  # (K, D)
        self.register_buffer("bias", torch.as_tensor(bias, dtype=torch.float32))  # (K,)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(features @ self.weights.T + self.bias)


class WholeFrameModel(nn.Module):
    """The exported graph: windows -> (probs, features)."""

    def __init__(self, features: WindowFeatures, head: LinearHead):
        super().__init__()
        self.features, self.head = features, head

    def forward(self, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.features(windows)
        return self.head(features), features
