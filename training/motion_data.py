"""Synthetic motion videos: the class is in the motion only, never in a single frame.

Each video shows a textured square gliding over a textured background, wrapping around the frame
edges (a torus), in one of four directions. Start position, speed and the source frame rate vary
per video; textures are shared by every class within a group (like UCF101's `gNN`: one scene),
so appearance says nothing about the class. Because the object wraps around, the set of positions
visited over time is the same whichever way it moves: the temporal mean of the frames is the same
for `MovingLeft` and `MovingRight`, so a frame-averaging model can only guess, while a model that
sees the order of frames (C3D) can learn the direction.

Files are real videos (MPEG-4 Part 2 in AVI, written with PyAV) with UCF101-style names:
`ROOT/MovingLeft/v_MovingLeft_g03_c02.avi`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

DIRECTIONS = {  # class name -> unit velocity (x to the right, y downwards)
    "MovingLeft": (-1.0, 0.0),
    "MovingRight": (1.0, 0.0),
    "MovingUp": (0.0, -1.0),
    "MovingDown": (0.0, 1.0),
}


@dataclass(frozen=True)
class MotionDataConfig:
    """What to generate."""

    classes: tuple[str, ...] = ("MovingLeft", "MovingRight")  # keys of DIRECTIONS
    groups: int = 8  # scenes; every class gets one clip set per group
    clips_per_group: int = 3  # clips per class and group (cNN)
    seed: int = 0  # a different seed gives different scenes: use one for train, one for test
    # Square frames: the loader scales them (80 -> 64) and the centre crop (56 of 64) still shows
    # the object wherever it is; with 4:3 frames a vertical mover could pass outside the crop.
    width: int = 80
    height: int = 80
    seconds: float = 3.0  # clip length in the source
    fps_choices: tuple[float, ...] = (10.0, 15.0, 25.0, 30.0)  # sources differ; sampling by time
    speed: tuple[float, float] = (30.0, 45.0)  # pixels per second, drawn per video
    object_size: int = 20  # side of the moving square, pixels


def _texture(rng: np.random.Generator, height: int, width: int, block: int,
             low: int = 0, high: int = 256) -> np.ndarray:
    """Random RGB blocks of `block` pixels with values in [low, high), uint8 `(height, width, 3)`."""
    cells = rng.integers(low, high, size=(-(-height // block), -(-width // block), 3), dtype=np.uint8)
    return np.repeat(np.repeat(cells, block, 0), block, 1)[:height, :width]


def render_motion_frames(rng: np.random.Generator, background: np.ndarray, patch: np.ndarray,
                         direction: tuple[float, float], speed: float, fps: float,
                         seconds: float) -> np.ndarray:
    """Frames of `patch` moving over `background` at `speed` px/s, wrapping: `(F, H, W, 3)`."""
    height, width = background.shape[:2]
    side = patch.shape[0]
    layer = np.zeros_like(background)
    mask = np.zeros((height, width), dtype=bool)
    layer[:side, :side] = patch
    mask[:side, :side] = True
    x0, y0 = rng.uniform(0, width), rng.uniform(0, height)
    frames = []
    for index in range(round(seconds * fps)):
        t = index / fps
        dx = round(x0 + direction[0] * speed * t) % width
        dy = round(y0 + direction[1] * speed * t) % height
        shifted = np.roll(mask, (dy, dx), axis=(0, 1))
        frame = background.copy()
        frame[shifted] = np.roll(layer, (dy, dx), axis=(0, 1))[shifted]
        frames.append(frame)
    return np.stack(frames)  # (F, H, W, 3)


def write_video(path: Path, frames: np.ndarray, fps: float) -> None:
    """Write uint8 RGB `(F, H, W, 3)` as MPEG-4 Part 2 (the codec of UCF101's AVIs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=_as_fraction(fps))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = 2_000_000  # high enough that blocks of texture survive
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _as_fraction(fps: float):
    from fractions import Fraction

    return Fraction(fps).limit_denominator(1001)


def generate_motion_dataset(root: Path, config: MotionDataConfig = MotionDataConfig()) -> list[Path]:
    """Write `ROOT/<Class>/v_<Class>_gGG_cCC.avi` for every class, group and clip; return paths."""
    unknown = [c for c in config.classes if c not in DIRECTIONS]
    if unknown:
        raise ValueError(f"unknown motion class {unknown[0]!r}: choose from {', '.join(DIRECTIONS)}")
    paths = []
    for group in range(1, config.groups + 1):
        scene = np.random.default_rng([config.seed, group])
        # A dim, coarse background and a bright, fine object: visible, but the same for all classes.
        background = _texture(scene, config.height, config.width, block=12, high=110)
        patch = _texture(scene, config.object_size, config.object_size, block=4, low=140)
        for class_index, name in enumerate(config.classes):
            for clip in range(1, config.clips_per_group + 1):
                rng = np.random.default_rng([config.seed, group, class_index, clip])
                fps = float(rng.choice(config.fps_choices))
                speed = float(rng.uniform(*config.speed))
                frames = render_motion_frames(rng, background, patch, DIRECTIONS[name], speed,
                                              fps, config.seconds)
                path = Path(root) / name / f"v_{name}_g{group:02d}_c{clip:02d}.avi"
                write_video(path, frames, fps)
                paths.append(path)
    return paths
