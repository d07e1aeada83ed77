"""musicnn (Pons & Serra 2019) in torch: raw 16 kHz PCM -> log-mel -> MagnaTagATune tag probabilities.

The original (`musicnn` 0.1.0 on PyPI, ISC licence, TensorFlow 1) computes a log-mel spectrogram
with librosa outside the network and feeds `(N, 187, 96)` patches to the `MTT_musicnn` graph. Here
both halves are torch modules, so one exported ONNX graph takes PCM and the tagger needs no DSP:

- `LogMel`: STFT as a fixed `conv1d` with Hann-windowed cos/sin kernels (n_fft 512, hop 256), power
  spectrum, librosa's Slaney mel matrix (96 bands, 0-8 kHz, area-normalised), then
  `log10(10000 * mel + 1)`. All in float32: the original casts the mel power to float16 first, which
  overflows to inf on ordinary music. No padding: the original computes one centred spectrogram of
  the whole file and cuts 187-frame patches out of it, so a patch's edge frames see the sound around
  the patch. A patch of `(n_frames - 1) * hop + n_fft` = 48128 samples gives exactly those frames
  (frame t covers samples [256 t, 256 t + 512)); padding a 47616-sample patch librosa-style instead
  changed edge frames by up to 3.4 (log10 units) and probabilities by up to 0.077 on the shared clips.
- `Musicnn`: the network, rebuilt layer by layer from the wheel's `models.py` description:
  front end (two "timbral" convs spanning 7 frames x 38 / 67 mel bands and three "temporal" convs
  spanning 128 / 64 / 32 frames x 1 band, each ReLU -> batch norm -> max over frequency), mid end
  (three 7-frame 1D convs with 64 filters, residual connections, dense concatenation of all
  features), back end (max and mean over time, batch norm, dense 200 + ReLU, batch norm, dense 50).
  Batch norm runs in eval mode with the checkpoint's moving statistics and TF's epsilon 1e-3.

`load_musicnn_weights` fills `Musicnn` from the TF checkpoint's variables (read by
`training.tf_checkpoint`, no TensorFlow needed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

TF_BATCH_NORM_EPS = 1e-3  # tf.compat.v1.layers.batch_normalization's default epsilon


@dataclass(frozen=True)
class MusicnnConfig:
    """The spectrogram and network sizes of the published MTT_musicnn model."""

    sample_rate: int = 16000  # the model was trained on MagnaTagATune resampled to 16 kHz
    n_fft: int = 512  # 32 ms STFT frames
    hop: int = 256  # 16 ms between frames
    n_mels: int = 96  # mel bands, Slaney scale, 0 Hz to sample_rate / 2
    n_frames: int = 187  # frames per patch: the 3 s input the model was trained on
    log_scale: float = 10000.0  # log10(log_scale * mel + 1), the "logC" pre-processing of training
    timbral_filters: int = 204  # int(1.6 * 128) filters per timbral conv
    timbral_bands: tuple[int, ...] = (38, 67)  # int(0.4 * 96), int(0.7 * 96) mel bands per kernel
    timbral_frames: int = 7  # frames spanned by a timbral kernel
    temporal_filters: int = 51  # int(1.6 * 32) filters per temporal conv
    temporal_frames: tuple[int, ...] = (128, 64, 32)  # frames spanned by the temporal kernels
    midend_filters: int = 64  # filters of each mid-end conv
    midend_frames: int = 7  # frames spanned by a mid-end kernel
    backend_units: int = 200  # penultimate dense layer
    num_tags: int = 50  # MagnaTagATune top-50 tags

    @property
    def patch_samples(self) -> int:
        """PCM samples per patch: unpadded frames, 1 + (S - n_fft) // hop of them, so S = (frames - 1) * hop + n_fft."""
        return (self.n_frames - 1) * self.hop + self.n_fft

    @property
    def frontend_channels(self) -> int:
        return self.timbral_filters * len(self.timbral_bands) + self.temporal_filters * len(self.temporal_frames)

    @property
    def feature_channels(self) -> int:
        """Front-end features plus the three mid-end outputs, densely concatenated."""
        return self.frontend_channels + 3 * self.midend_filters


def slaney_mel_matrix(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """librosa's default mel filterbank (`htk=False`, `norm='slaney'`), `(n_mels, n_fft // 2 + 1)`.

    Triangles centred on n_mels + 2 points evenly spaced on the Slaney mel scale (linear below
    1 kHz, logarithmic above) between 0 Hz and Nyquist, each scaled to unit area (2 / width in Hz).
    """

    def hz_to_mel(hz: np.ndarray) -> np.ndarray:
        f_sp, min_log_hz = 200.0 / 3, 1000.0
        min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
        mel = hz / f_sp
        return np.where(hz >= min_log_hz, min_log_mel + np.log(np.maximum(hz, 1e-10) / min_log_hz) / logstep, mel)

    def mel_to_hz(mel: np.ndarray) -> np.ndarray:
        f_sp, min_log_hz = 200.0 / 3, 1000.0
        min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
        return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), f_sp * mel)

    fft_hz = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    mel_hz = mel_to_hz(np.linspace(hz_to_mel(np.array(0.0)), hz_to_mel(np.array(sample_rate / 2.0)), n_mels + 2))
    widths = np.diff(mel_hz)
    ramps = mel_hz[:, None] - fft_hz[None, :]  # (n_mels + 2, bins)
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))  # (n_mels, bins)
    weights *= (2.0 / (mel_hz[2:] - mel_hz[:-2]))[:, None]
    return weights.astype(np.float32)


class LogMel(nn.Module):
    """PCM `(N, S)` -> musicnn's log-mel patch `(N, 1 + (S - n_fft) // hop, n_mels)`, float32 throughout."""

    def __init__(self, config: MusicnnConfig) -> None:
        super().__init__()
        self.hop, self.log_scale = config.hop, config.log_scale
        n = np.arange(config.n_fft)
        window = 0.5 - 0.5 * np.cos(2 * np.pi * n / config.n_fft)  # periodic Hann, as librosa's get_window
        bins = np.arange(config.n_fft // 2 + 1)
        phase = 2 * np.pi * np.outer(bins, n) / config.n_fft  # (bins, n_fft)
        kernels = np.concatenate([np.cos(phase), -np.sin(phase)]) * window  # (2 * bins, n_fft): real, imag
        self.register_buffer("stft_kernels", torch.tensor(kernels[:, None, :], dtype=torch.float32))
        mel = slaney_mel_matrix(config.sample_rate, config.n_fft, config.n_mels)
        self.register_buffer("mel_matrix", torch.tensor(mel))  # (n_mels, bins)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        spectrum = F.conv1d(audio[:, None, :], self.stft_kernels, stride=self.hop)  # (N, 2 * bins, T)
        real, imag = spectrum.chunk(2, dim=1)  # (N, bins, T) each
        power = real * real + imag * imag
        mel = torch.matmul(self.mel_matrix, power)  # (N, n_mels, T)
        return torch.log10(self.log_scale * mel + 1.0).transpose(1, 2)  # (N, T, n_mels)


class ConvReluNorm(nn.Module):
    """Conv -> ReLU -> batch norm, the order musicnn uses everywhere."""

    def __init__(self, conv: nn.Conv1d | nn.Conv2d, norm: nn.BatchNorm1d | nn.BatchNorm2d) -> None:
        super().__init__()
        self.conv, self.norm = conv, norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(torch.relu(self.conv(x)))


class Musicnn(nn.Module):
    """The MTT_musicnn network: log-mel `(N, T, n_mels)` -> tag logits `(N, num_tags)`."""

    def __init__(self, config: MusicnnConfig) -> None:
        super().__init__()
        self.config = config
        eps = TF_BATCH_NORM_EPS
        self.input_norm = nn.BatchNorm2d(1, eps=eps)
        self.timbral = nn.ModuleList(
            ConvReluNorm(nn.Conv2d(1, config.timbral_filters, (config.timbral_frames, bands)),
                         nn.BatchNorm2d(config.timbral_filters, eps=eps))
            for bands in config.timbral_bands)
        self.temporal = nn.ModuleList(
            ConvReluNorm(nn.Conv2d(1, config.temporal_filters, (frames, 1)),
                         nn.BatchNorm2d(config.temporal_filters, eps=eps))
            for frames in config.temporal_frames)
        widths = (config.frontend_channels, config.midend_filters, config.midend_filters)
        self.midend = nn.ModuleList(
            ConvReluNorm(nn.Conv1d(width, config.midend_filters, config.midend_frames, padding=config.midend_frames // 2),
                         nn.BatchNorm1d(config.midend_filters, eps=eps))
            for width in widths)
        self.pool_norm = nn.BatchNorm1d(2 * config.feature_channels, eps=eps)
        self.dense = nn.Linear(2 * config.feature_channels, config.backend_units)
        self.dense_norm = nn.BatchNorm1d(config.backend_units, eps=eps)
        self.output = nn.Linear(config.backend_units, config.num_tags)

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        x = self.input_norm(log_mel[:, None])  # (N, 1, T, F)
        pad = self.config.timbral_frames // 2
        padded = F.pad(x, (0, 0, pad, pad))  # time only: the frequency axis is pooled away anyway
        features = [block(padded).amax(dim=3) for block in self.timbral]  # (N, 204, T) each
        for frames, block in zip(self.config.temporal_frames, self.temporal):
            before = (frames - 1) // 2  # TF "same" padding puts the odd extra row after
            same = F.pad(x, (0, 0, before, frames - 1 - before))
            features.append(block(same).amax(dim=3))  # (N, 51, T)
        frontend = torch.cat(features, dim=1)  # (N, 561, T)
        mid1 = self.midend[0](frontend)  # (N, 64, T)
        mid2 = self.midend[1](mid1) + mid1
        mid3 = self.midend[2](mid2) + mid2
        dense = torch.cat([frontend, mid1, mid2, mid3], dim=1)  # (N, 753, T)
        # TF concatenates max and mean on a trailing axis before flattening: (max_0, mean_0, max_1, ...)
        pooled = torch.stack([dense.amax(dim=2), dense.mean(dim=2)], dim=2).flatten(1)  # (N, 1506)
        hidden = self.dense_norm(torch.relu(self.dense(self.pool_norm(pooled))))  # (N, 200)
        return self.output(hidden)  # (N, 50)


def load_musicnn_weights(model: Musicnn, variables: dict[str, np.ndarray]) -> None:
    """Copy the MTT_musicnn checkpoint's variables (TF names and layouts) into `model`.

    TF numbers layers in creation order: batch_normalization (input), conv2d / _1 timbral,
    conv2d_2.._4 temporal, conv2d_5.._7 mid end, dense / dense_1 back end; batch norms
    _1.._10 follow their convs and dense layer. Raises KeyError / ValueError on a mismatch.
    """

    def tensor(name: str) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(variables[name]))

    def set_norm(norm: nn.Module, index: int) -> None:
        scope = "batch_normalization" + (f"_{index}" if index else "")
        for ours, theirs in (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"),
                             ("running_var", "moving_variance")):
            _assign(getattr(norm, ours), tensor(f"{scope}/{theirs}"), f"{scope}/{theirs}")

    def set_conv(conv: nn.Module, index: int) -> None:
        scope = "conv2d" + (f"_{index}" if index else "")
        kernel = tensor(f"{scope}/kernel")  # (kh, kw, in, out)
        weight = kernel.permute(3, 2, 0, 1)  # (out, in, kh, kw)
        if isinstance(conv, nn.Conv1d):  # a mid-end conv spans all channels: TF's kw is our in
            weight = kernel[:, :, 0, :].permute(2, 1, 0)  # (out, in, kh)
        _assign(conv.weight, weight, f"{scope}/kernel")
        _assign(conv.bias, tensor(f"{scope}/bias"), f"{scope}/bias")

    set_norm(model.input_norm, 0)
    blocks = [*model.timbral, *model.temporal, *model.midend]
    for index, block in enumerate(blocks):
        set_conv(block.conv, index)
        set_norm(block.norm, index + 1)
    set_norm(model.pool_norm, len(blocks) + 1)
    set_norm(model.dense_norm, len(blocks) + 2)
    for layer, scope in ((model.dense, "dense"), (model.output, "dense_1")):
        _assign(layer.weight, tensor(f"{scope}/kernel").T, f"{scope}/kernel")
        _assign(layer.bias, tensor(f"{scope}/bias"), f"{scope}/bias")


def _assign(target: torch.Tensor, value: torch.Tensor, name: str) -> None:
    if tuple(target.shape) != tuple(value.shape):
        raise ValueError(f"{name}: checkpoint shape {tuple(value.shape)} does not fit {tuple(target.shape)}")
    with torch.no_grad():
        target.copy_(value)
