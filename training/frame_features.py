"""Backbone features of every frame crop a scan would feed the model, cached on disk.

The default model's head is trained on these: each photo or video is opened with the tagger's own
decoders (`tagger.decode.open_video`, PyAV first), its windows planned with `tagger.windows`
(the frame on screen at each sample time, or the keyframe standing in for it), each sampled
frame cut into the crops the scan cuts (`tagger.decode.frame_crops`), and every crop run through
the frozen ImageNet backbone once. What the head learns from is therefore exactly what the
exported graph sees in a scan.

A photo is a one-frame video, so its windows repeat that frame, as a scan of a still would.

Two augmentations add views of the same file (`AUGMENTATIONS`): a mirror image, and the frame
decoded at a low resolution and scaled back up. The second matters: the corpus's tabla photos are
140-pixel thumbnails, and without it a head learns "blurry" as a sign of tabla. A third,
`wide_shot`, pastes a photo small and at one side of a 16:9 frame over a photo without
instruments: the corpus shows instruments large and centred, archives show them small in wide
shots.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tagger.decode import frame_crops, open_video
from tagger.windows import plan_windows

FEATURE_VERSION = 3  # part of every cache key: raise it when the decoding, crops or views change (3: keyframes stand in)
AUGMENTATIONS = ("flip", "lowres")
LOWRES_SHORT_SIDE = 112  # below the tabla thumbnails' 140 px, so every class has views blurrier than them


@dataclass(frozen=True)
class Geometry:
    """How frames are sampled and cut: the scan-side half of a video model's contract."""

    resize: int = 224  # short side the frame is scaled to
    crop: int = 224  # square crop side
    crops: int = 3  # crops across the long side
    clip_len: int = 8  # frames per window
    frame_interval: float = 0.5  # seconds between a window's frames

    def key(self) -> str:
        return f"r{self.resize}c{self.crop}x{self.crops}t{self.clip_len}i{self.frame_interval:g}"


@dataclass
class ItemFeatures:
    """One file's backbone outputs per window, frame and crop."""

    features: np.ndarray  # (W, T, C, D) float16 pooled backbone features
    logits: np.ndarray  # (W, T, C, 1000) float16 ImageNet logits
    starts: np.ndarray  # (W,) window start seconds


@dataclass(frozen=True)
class WideShot:
    """A photo pasted at `scale` of the frame's height at one `side` of a 16:9 frame over `background`."""

    background: Path
    scale: float
    side: str  # "left", "centre" or "right"

    def key(self) -> str:
        stat = self.background.stat()
        digest = hashlib.sha256(f"{self.background.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()
        return f"wide{self.scale:g}{self.side}{digest[:12]}"


def _cache_path(cache: Path, path: Path, backbone: str, geometry: Geometry, augment: str | WideShot | None,
                weights: str = "") -> Path:
    stat = path.stat()
    digest = hashlib.sha256(f"{FEATURE_VERSION}:{weights}:{LOWRES_SHORT_SIDE}:{path.resolve()}:{stat.st_size}:"
                            f"{stat.st_mtime_ns}".encode()).hexdigest()[:20]
    name = augment.key() if isinstance(augment, WideShot) else augment
    return cache / backbone / geometry.key() / f"{digest}{'-' + name if name else ''}.npz"


def _resized(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].float()
    out = torch.nn.functional.interpolate(x, size=(height, width), mode="bilinear", align_corners=False,
                                          antialias=True)
    return out[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def first_frame(path: Path, short_side: int) -> np.ndarray:
    """The first frame of `path` (a photo's only one), scaled as the scan scales it."""
    source = open_video(str(path), short_side)
    try:
        return next(frame for _, frame in source.read([0]))
    finally:
        source.close()


def wide_shot(subject: np.ndarray, background: np.ndarray, shot: WideShot, height: int) -> np.ndarray:
    """A `height` x 16:9 frame: `background` scaled to cover it, `subject` pasted as `shot` says."""
    width = round(height * 16 / 9)
    bh, bw = background.shape[:2]
    cover = max(height / bh, width / bw)
    scaled = _resized(background, max(height, round(bh * cover)), max(width, round(bw * cover)))
    top, left = (scaled.shape[0] - height) // 2, (scaled.shape[1] - width) // 2
    frame = scaled[top:top + height, left:left + width].copy()
    sh, sw = subject.shape[:2]
    fit = min(shot.scale * height / sh, width / sw)
    h, w = max(1, round(sh * fit)), max(1, round(sw * fit))
    x = {"left": 0, "centre": (width - w) // 2, "right": width - w}[shot.side]
    y = (height - h) // 2
    frame[y:y + h, x:x + w] = _resized(subject, h, w)
    return frame


def _augmented(frame: np.ndarray, augment: str | None, resize: int) -> np.ndarray:
    """`frame` (H, W, 3) as `augment` sees it: as it is, mirrored, or scaled up to `resize`."""
    if augment == "flip":
        return np.ascontiguousarray(frame[:, ::-1])
    if augment == "lowres":
        from tagger.decode import scaled_size

        width, height = scaled_size(frame.shape[1], frame.shape[0], resize)
        x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].float()
        up = torch.nn.functional.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)
        return up[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
    return frame


def window_crops(path: Path, geometry: Geometry, augment: str | WideShot | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(unique frame crops (F, C, H, W, 3) uint8, window rows (W, T) into them, window starts)."""
    if isinstance(augment, WideShot):  # a photo in a wide shot: one frame, one window
        frame = wide_shot(first_frame(path, geometry.resize), first_frame(augment.background, geometry.resize),
                          augment, geometry.resize)
        crops = frame_crops(frame, (geometry.crop, geometry.crop), geometry.crops)[None]  # (1, C, H, W, 3)
        return crops, np.zeros((1, geometry.clip_len), int), np.zeros(1)
    short_side = LOWRES_SHORT_SIDE if augment == "lowres" else geometry.resize
    source = open_video(str(path), short_side)
    try:
        plan = plan_windows(source.timestamps, source.info.duration, geometry.clip_len, geometry.frame_interval,
                            keyframes=source.keyframes)
        needed = plan.needed_frames
        frames = {int(i): frame_crops(_augmented(frame, augment, geometry.resize), (geometry.crop, geometry.crop),
                                      geometry.crops)
                  for i, frame in source.read(needed)}
    finally:
        source.close()
    order = {index: row for row, index in enumerate(needed.tolist())}
    rows = np.vectorize(order.__getitem__)(plan.frame_indices)
    return np.stack([frames[int(i)] for i in needed]), rows, plan.starts


def _weights_name(backbone_name: str) -> str:
    """The installed weights file's name (it carries the weights' hash), for the cache key."""
    from training.pretrained import LITE_VARIANTS, lite_weights_path

    return lite_weights_path(backbone_name).name if backbone_name in LITE_VARIANTS else backbone_name


@torch.no_grad()
def extract(path: Path, backbone: torch.nn.Module, backbone_name: str, geometry: Geometry,
            mean: tuple[float, ...], std: tuple[float, ...], cache: Path,
            augment: str | WideShot | None = None) -> ItemFeatures:
    """The backbone's features and logits for every window crop of `path` (cached), seen as `augment`."""
    target = _cache_path(cache, path, backbone_name, geometry, augment, f"{_weights_name(backbone_name)}:{mean}:{std}")
    if target.is_file():
        with np.load(target) as saved:
            return ItemFeatures(saved["features"], saved["logits"], saved["starts"])
    crops, rows, starts = window_crops(path, geometry, augment)  # (F, C, H, W, 3)
    f, c = crops.shape[:2]
    x = torch.from_numpy(crops.reshape(f * c, *crops.shape[2:])).permute(0, 3, 1, 2).float() / 255.0
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    feats, logits = [], []
    for chunk in torch.split(x, 48):
        pooled = backbone.features(chunk)
        feats.append(pooled)
        logits.append(backbone._fc(pooled))
    features = torch.cat(feats).reshape(f, c, -1).numpy().astype(np.float16)[rows]  # (W, T, C, D)
    logit = torch.cat(logits).reshape(f, c, -1).numpy().astype(np.float16)[rows]
    target.parent.mkdir(parents=True, exist_ok=True)
    np.savez(target, features=features, logits=logit, starts=starts)
    return ItemFeatures(features, logit, starts)
