"""Video classifiers by name: C3D, VC3D, a frame-mean 2D baseline, and a registry for more.

Every model takes float clips `(N, 3, T, H, W)`, already normalised with its config's mean/std
(the export wrapper and the training loop do that from uint8 frames), and returns logits `(N, K)`.

Every architecture has one frozen config dataclass (nanoGPT style) that subclasses
`VideoModelConfig`, so it says what input it expects (clip_len, size, resize, mean, std).
Checkpoints store `arch` and `dataclasses.asdict(config)`; `build_model(arch, config_dict)` rebuilds
the model from those two alone.

Registering another architecture (this is how `training/pretrained.py` adds `efficientnet`)::

    @dataclass(frozen=True)
    class EfficientNetConfig(VideoModelConfig):
        size: tuple[int, int] = (224, 224)  # what the backbone was trained on
        resize: int = 256

    def build_efficientnet(config: EfficientNetConfig) -> nn.Module: ...

    register_arch("efficientnet", build_efficientnet)   # config class read from the annotation
    # or explicitly: register_arch("efficientnet", build_efficientnet, EfficientNetConfig)

`python -m training.fit --arch efficientnet` then works once the registering module is imported;
add it to `ARCH_MODULES` below so the CLI imports it on demand.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tagger.errors import UsageError

KINETICS_MEAN = (0.43216, 0.394666, 0.37645)  # torchvision's video models; RGB, 0..1 scale
KINETICS_STD = (0.22803, 0.22145, 0.216989)
ARCH_MODULES = {"efficientnet": "training.pretrained"}  # archs registered by other modules


@dataclass(frozen=True)
class VideoModelConfig:
    """What every architecture's config says about its input and output."""

    num_classes: int = 101  # K; UCF101 has 101 classes, fit sets it from the data
    clip_len: int = 16  # T: frames per clip, as in C3D
    size: tuple[int, int] = (112, 112)  # (H, W) crop fed to the model, as in C3D
    resize: int = 128  # short side before cropping (C3D: 320x240 -> 171x128 -> 112x112)
    mean: tuple[float, float, float] = KINETICS_MEAN  # RGB, applied on the 0..1 scale
    std: tuple[float, float, float] = KINETICS_STD


@dataclass(frozen=True)
class C3DConfig(VideoModelConfig):
    """C3D (Tran et al. 2015): eight 3x3x3 convolutions, five pools, fc6-fc8."""

    width: float = 1.0  # channel multiplier: 0.25 gives a ~20 MB model that trains on a CPU
    dropout: float = 0.5  # after fc6 and fc7, as in the paper


@dataclass(frozen=True)
class VC3DConfig(VideoModelConfig):
    """The original work's smaller C3D variant with batch norm ("VC3D")."""

    clip_len: int = 16  # as in the original work
    size: tuple[int, int] = (120, 120)  # the original work's crop
    resize: int = 128
    width: float = 1.0  # channel multiplier (fc sizes follow the flattened features)
    dropout: float = 0.5


@dataclass(frozen=True)
class FrameMeanConfig(VideoModelConfig):
    """A 2D CNN on the temporal mean of the frames: it cannot see the order of frames."""

    width: float = 1.0  # channel multiplier


def _channels(base: int, width: float) -> int:
    """Scale a channel count, keeping at least 4 so tiny widths still work."""
    return max(4, round(base * width))


def _pool_kernel(size: tuple[int, int, int], kernel: tuple[int, int, int]) -> tuple[int, ...]:
    """Shrink a pool kernel to the feature map where it is smaller (short clips, small crops)."""
    return tuple(min(k, n) for k, n in zip(kernel, size))


def _pool_out(size: tuple[int, int, int], kernel: tuple[int, ...], stride: tuple[int, ...],
              pad: tuple[int, ...] = (0, 0, 0)) -> tuple[int, int, int]:
    """Output size of a floor-mode pool (we never use ceil_mode: see DESIGN.md)."""
    return tuple((n + 2 * p - k) // s + 1 for n, k, s, p in zip(size, kernel, stride, pad))


def _conv(c_in: int, c_out: int) -> nn.Conv3d:
    return nn.Conv3d(c_in, c_out, kernel_size=3, padding=1)


def init_weights(model: nn.Module) -> None:
    """He initialisation for ReLU networks (torchvision's choice for video models).

    PyTorch's default init shrinks the signal through C3D's eight BN-free conv layers until the
    logits barely depend on the input and training stalls at chance; this keeps its scale.
    """
    for module in model.modules():
        if isinstance(module, (nn.Conv3d, nn.Conv2d)):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            nn.init.zeros_(module.bias)
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    nn.init.normal_(last.weight, std=0.01)  # start near uniform scores: no huge first losses


class C3D(nn.Module):
    """C3D: conv1a pool1(1x2x2) conv2a pool2 conv3a-b pool3 conv4a-b pool4 conv5a-b pool5 fc6-8.

    For the paper's 16x112x112 input the feature maps are 64x16x56x56, 128x8x28x28,
    256x4x14x14, 512x2x7x7, then pool5 pads H and W by one (explicitly; Caffe used ceil mode)
    to give 512x1x4x4 = 8192 features for fc6 (4096), fc7 (4096), fc8 (K). Other input sizes
    get the same rule: pool5 pads an odd H or W.
    """

    def __init__(self, config: C3DConfig) -> None:
        super().__init__()
        self.config = config
        c = [_channels(n, config.width) for n in (64, 128, 256, 512)]
        fc = _channels(4096, config.width)
        size = (config.clip_len, *config.size)
        layers: list[nn.Module] = []
        plan = [  # (convs, out channels, pool kernel)
            ([3], c[0], (1, 2, 2)), ([c[0]], c[1], (2, 2, 2)), ([c[1], c[2]], c[2], (2, 2, 2)),
            ([c[2], c[3]], c[3], (2, 2, 2)), ([c[3], c[3]], c[3], (2, 2, 2)),
        ]
        for index, (inputs, out, kernel) in enumerate(plan):
            for c_in in inputs:
                layers += [_conv(c_in, out), nn.ReLU(inplace=True)]
            kernel = _pool_kernel(size, kernel)
            pad = (0, size[1] % 2, size[2] % 2) if index == len(plan) - 1 else (0, 0, 0)
            layers.append(nn.MaxPool3d(kernel, kernel, padding=pad))
            size = _pool_out(size, kernel, kernel, pad)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(c[3] * size[0] * size[1] * size[2], fc), nn.ReLU(inplace=True),
            nn.Dropout(config.dropout),
            nn.Linear(fc, fc), nn.ReLU(inplace=True), nn.Dropout(config.dropout),
            nn.Linear(fc, config.num_classes),
        )
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (N, C, T', H', W')
        return self.classifier(torch.flatten(x, 1))  # (N, K)


class VC3D(nn.Module):
    """The original work's VC3D for 16x120x120 clips.

    conv 64, BN, pool 2x2x2 -> 64x8x60x60; conv 128, BN, pool 2x2x2 -> 128x4x30x30;
    conv 256, conv 256, pool 2x2x2, BN, dropout -> 256x2x15x15; conv 512, conv 512, pool 2x3x3,
    BN, dropout -> 512x1x5x5; max-pool 1x1x2 (stride 1x1x2) halves only the width, 5 -> 2 (floor
    mode drops the last column) -> 512x1x5x2 = 5120, which is where the 5120 of fc 5120-1280-640-K
    comes from. ReLU follows every convolution and the two hidden fc layers.
    """

    def __init__(self, config: VC3DConfig) -> None:
        super().__init__()
        self.config = config
        c = [_channels(n, config.width) for n in (64, 128, 256, 512)]
        size = (config.clip_len, *config.size)
        layers: list[nn.Module] = []

        def pool(kernel: tuple[int, int, int]) -> None:
            nonlocal size
            kernel = _pool_kernel(size, kernel)
            layers.append(nn.MaxPool3d(kernel, kernel))
            size = _pool_out(size, kernel, kernel)

        layers += [_conv(3, c[0]), nn.ReLU(inplace=True), nn.BatchNorm3d(c[0])]
        pool((2, 2, 2))
        layers += [_conv(c[0], c[1]), nn.ReLU(inplace=True), nn.BatchNorm3d(c[1])]
        pool((2, 2, 2))
        layers += [_conv(c[1], c[2]), nn.ReLU(inplace=True), _conv(c[2], c[2]), nn.ReLU(inplace=True)]
        pool((2, 2, 2))
        layers += [nn.BatchNorm3d(c[2]), nn.Dropout(config.dropout)]
        layers += [_conv(c[2], c[3]), nn.ReLU(inplace=True), _conv(c[3], c[3]), nn.ReLU(inplace=True)]
        pool((2, 3, 3))
        layers += [nn.BatchNorm3d(c[3]), nn.Dropout(config.dropout)]
        pool((1, 1, 2))
        self.features = nn.Sequential(*layers)
        flat = c[3] * size[0] * size[1] * size[2]  # 5120 at width 1 and 16x120x120
        self.classifier = nn.Sequential(
            nn.Linear(flat, flat // 4), nn.ReLU(inplace=True),
            nn.Linear(flat // 4, flat // 8), nn.ReLU(inplace=True),
            nn.Linear(flat // 8, config.num_classes),
        )
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (N, C, 1, 5, 2) for 16x120x120
        return self.classifier(torch.flatten(x, 1))  # (N, K)


class FrameMean2D(nn.Module):
    """Baseline that averages the frames over time, then runs a small 2D CNN.

    Whatever it learns is in the frames' appearance, never their order: on data where only motion
    carries the class it must stay near chance (tests use it to prove C3D learns motion).
    """

    def __init__(self, config: FrameMeanConfig) -> None:
        super().__init__()
        self.config = config
        c = [_channels(n, config.width) for n in (32, 64, 128)]
        self.features = nn.Sequential(
            nn.Conv2d(3, c[0], 3, padding=1), nn.BatchNorm2d(c[0]), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(c[0], c[1], 3, padding=1), nn.BatchNorm2d(c[1]), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(c[1], c[2], 3, padding=1), nn.BatchNorm2d(c[2]), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Linear(c[2], config.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.mean(dim=2)  # (N, 3, H, W): the order of frames is gone
        return self.classifier(torch.flatten(self.features(x), 1))  # (N, K)


@dataclass(frozen=True)
class Arch:
    """A registered architecture: how to build it and the config class it takes."""

    name: str
    builder: Callable[[Any], nn.Module]
    config_cls: type


ARCHS: dict[str, Arch] = {}


def register_arch(name: str, builder: Callable[[Any], nn.Module],
                  config_cls: type | None = None) -> None:
    """Make `--arch NAME` build models with `builder(config)`.

    Args:
        name: the name users pass to `--arch`.
        builder: takes one config (a frozen dataclass subclassing `VideoModelConfig`) and returns
            a module mapping float `(N, 3, T, H, W)` to logits `(N, K)`.
        config_cls: the config class; read from the annotation of builder's first parameter
            when omitted.
    """
    if config_cls is None:
        target = builder.__init__ if inspect.isclass(builder) else builder
        params = [p for p in inspect.signature(target).parameters if p != "self"]
        try:
            config_cls = typing.get_type_hints(target).get(params[0]) if params else None
        except NameError:  # an annotation that cannot be resolved from the module's globals
            config_cls = None
    if not (inspect.isclass(config_cls) and issubclass(config_cls, VideoModelConfig)):
        raise TypeError(f"register_arch({name!r}): pass config_cls, a VideoModelConfig subclass")
    ARCHS[name] = Arch(name, builder, config_cls)


register_arch("c3d", C3D, C3DConfig)
register_arch("vc3d", VC3D, VC3DConfig)
register_arch("framemean", FrameMean2D, FrameMeanConfig)


def get_arch(name: str) -> Arch:
    """The registered architecture `name`, importing its module from ARCH_MODULES if needed."""
    if name not in ARCHS and name in ARCH_MODULES:
        try:
            importlib.import_module(ARCH_MODULES[name])
        except ImportError as exc:
            raise UsageError(f"--arch {name} needs {ARCH_MODULES[name]} ({exc})") from exc
    if name not in ARCHS:
        choices = sorted(set(ARCHS) | set(ARCH_MODULES))
        raise UsageError(f"unknown --arch {name!r}: choose one of {', '.join(choices)}")
    return ARCHS[name]


def make_config(arch: str, options: Mapping[str, Any]) -> VideoModelConfig:
    """Build `arch`'s config from `options` (None values keep the arch's default).

    Raises:
        UsageError: an option the architecture does not have.
    """
    config_cls = get_arch(arch).config_cls
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(k for k, v in options.items() if v is not None and k not in fields)
    if unknown:
        raise UsageError(f"--arch {arch} has no option {unknown[0]!r}: its options are "
                         f"{', '.join(sorted(fields))}")
    values = {k: tuple(v) if isinstance(v, list) else v
              for k, v in options.items() if v is not None and k in fields}
    return config_cls(**values)


def build_model(arch: str, config: VideoModelConfig | Mapping[str, Any]) -> nn.Module:
    """Build `arch` from its config or from the dict a checkpoint stored."""
    if not isinstance(config, VideoModelConfig):
        config = make_config(arch, config)
    return get_arch(arch).builder(config)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (4 bytes each once exported as float32)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
