"""The measurement behind the default model's choices: resolution, frames per window, pooling.

For each input resolution, every labelled shared clip is sampled on a 4 fps grid (decoded with the
tagger's own frame sources and crop rule: short-side resize, then the centre crop, or with
`--crops C` C crops across the long side as `tagger.crops` feeds a model) and EfficientNet-Lite0
gives each frame its tag scores (`training/imagenet_map.py`; with several crops, a tag's best
crop). Windows of T frames taken every k-th grid frame are then pooled offline, so one decode
per resolution covers every (T, interval, pooling) choice.

For each choice it prints the best window score of each instrument clip for its own tag (recall
margin) and the worst window and the worst single frame of any tag on the clips without
instruments (false-tag margin). Extra negative footage can be added as folders of videos or
images (`--negatives DIR`); the build used the dancer clip of the `musicalgestures` wheel and the
photographs of the `scikit-image` wheel.

    python bench/calibrate_default.py                      # 5-12 minutes on 2 busy CPU cores
    python bench/calibrate_default.py --negatives /tmp/extra --sizes 224
    python bench/calibrate_default.py --sizes 224 --crops 3   # three crops across each frame
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import torch

from tagger.decode import frame_crops, open_video, scaled_size
from training.imagenet_map import INSTRUMENT_TAGS, class_to_tag_matrix
from training.pretrained import LITE0_MEAN, LITE0_STD, load_lite0

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
GRID = 0.25  # seconds between grid frames: every interval tried is a multiple of it
SIZES = {"160": (160, (160, 160)), "192": (192, (192, 192)), "224": (224, (224, 224)),
         "256/224": (256, (224, 224)), "224x288": (224, (224, 288))}  # name: (resize, crop)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
TAGS = [row.tag for row in INSTRUMENT_TAGS]


def tag_scores(model: torch.nn.Module, frames: np.ndarray) -> np.ndarray:
    """Per-frame tag scores `(F, tags)` of uint8 frames `(F, H, W, 3)`."""
    mean = torch.tensor(LITE0_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(LITE0_STD).view(1, 3, 1, 1)
    x = (torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255 - mean) / std
    matrix = torch.tensor(class_to_tag_matrix())
    with torch.no_grad():
        return torch.cat([model(x[i:i + 32]).softmax(1) @ matrix for i in range(0, len(x), 32)]).numpy()


def grid_frames(path: Path, resize: int, crop: tuple[int, int], crops: int = 1) -> np.ndarray:
    """Each frame's crops `(F, C, H, W, 3)`, a frame every GRID seconds of a video, or an image as
    one frame; cut as a scan cuts them for a model of `crops` crops (`tagger.decode.frame_crops`)."""
    if path.suffix.lower() in IMAGE_SUFFIXES:
        from PIL import Image

        image = Image.open(path).convert("RGB")
        image = image.resize(scaled_size(*image.size, resize), Image.BILINEAR)
        return frame_crops(np.asarray(image), crop, crops)[None]
    source = open_video(str(path), resize)
    times = np.arange(0, source.info.duration, GRID) + 1e-6
    indices = np.clip(np.searchsorted(source.timestamps, times, side="right") - 1, 0, None)
    frames = dict(source.read(np.unique(indices)))
    return np.stack([frame_crops(frames[i], crop, crops) for i in indices])


def frame_scores(model: torch.nn.Module, crops: np.ndarray) -> np.ndarray:
    """Per-frame tag scores `(F, tags)` of frames' crops `(F, C, H, W, 3)`: each tag's best crop,
    as an instrument seen in any part of the frame counts (C = 1: the centre crop's scores)."""
    count, per_frame = crops.shape[:2]
    scores = tag_scores(model, crops.reshape(count * per_frame, *crops.shape[2:]))  # (F*C, tags)
    return scores.reshape(count, per_frame, -1).max(axis=1)


def window_scores(scores: np.ndarray, clip_len: int, step: int, pooling: str) -> np.ndarray:
    """Pooled `(W, tags)` scores of back-to-back windows of clip_len grid frames, step apart."""
    span = clip_len * step
    starts = list(range(0, max(len(scores) - span, 0) + 1, span))
    if starts[-1] + span < len(scores):
        starts.append(len(scores) - span)  # the last window ends at the video's end, as in a scan
    rows = np.array([[min(s + i * step, len(scores) - 1) for i in range(clip_len)] for s in starts])
    windows = scores[rows]  # (W, T, tags)
    return windows.mean(axis=1) if pooling == "mean" else np.median(windows, axis=1)


def labelled_videos(data: Path, negatives: list[Path]) -> list[tuple[Path, str]]:
    """Shared clips with their MANIFEST labels, plus every file under the negative folders."""
    with open(data / "MANIFEST.tsv", newline="") as handle:
        videos = [(data / row["file"], row["label"]) for row in csv.DictReader(handle, delimiter="\t")
                  if row["file"].startswith("clips/")]
    for folder in negatives:
        videos += [(p, "other") for p in sorted(folder.iterdir()) if p.is_file()]
    return videos


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=SHARED_DATA)
    parser.add_argument("--negatives", type=Path, action="append", default=[])
    parser.add_argument("--sizes", nargs="*", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--crops", type=int, default=1, help="crops across each frame's long side (tagger.crops)")
    args = parser.parse_args()
    if args.crops < 1:
        parser.error(f"--crops must be >= 1, got {args.crops}")
    torch.set_num_threads(2)
    model = load_lite0()
    videos = labelled_videos(args.data, args.negatives)
    for size in args.sizes:
        resize, crop = SIZES[size]
        per_video = [(path, label, frame_scores(model, grid_frames(path, resize, crop, args.crops)))
                     for path, label in videos]
        worst_frame = max((s.max(), path.name, TAGS[s.max(0).argmax()])
                          for path, label, s in per_video if label == "other")
        print(f"== size {size}, {args.crops} crop(s): worst non-instrument frame {worst_frame[0]:.3f} "
              f"({worst_frame[1]}, {worst_frame[2]})")
        for step in (1, 2, 4):
            for clip_len in (4, 8, 16):
                for pooling in ("mean", "median"):
                    own, worst = [], (0.0, "", "")
                    for path, label, scores in per_video:
                        pooled = window_scores(scores, clip_len, step, pooling).max(axis=0)  # (tags,)
                        if label == "other":
                            worst = max(worst, (pooled.max(), path.name, TAGS[pooled.argmax()]))
                        else:
                            score = pooled[TAGS.index(label)]
                            own.append(f"{label.removeprefix('Playing')}={score:.2f}")
                    print(f"T={clip_len:2d} every {step * GRID:.2f}s ({clip_len * step * GRID:4.1f}s) "
                          f"{pooling:6s} own tag: {' '.join(own)} | worst other window "
                          f"{worst[0]:.3f} ({worst[1][:24]}, {worst[2]})")


if __name__ == "__main__":
    main()
