"""UCF101-style datasets: find the videos, split them without leaks, and sample clips by time.

Layout: `ROOT/<Class>/v_<Class>_gNN_cNN.avi` (UCF101) or any `ROOT/<label>/*.<video ext>` tree;
still photos (`.jpg`, `.png`, ...) count as one-frame videos.
Splits, in order of preference:
1. UCF101's official split files (`classInd.txt`, `trainlist0K.txt`, `testlist0K.txt`), obeyed
   exactly; the test list is the validation set.
2. A group split: the `gNN` part of UCF101 names (or the user's `--group-regex`) keeps every clip
   of one group (one actor, one scene) on one side; deterministic by seed.
3. Only when no file has a group: a per-file split, with a warning that it may leak.

Clips are read the way a scan reads them, through the tagger's own code: `tagger.decode` opens
the video (PyAV first, decord as the fallback) and scales frames while decoding (short side
`resize`); `tagger.windows` picks, for each sample time `t0 + i * frame_step / fps`, the frame on
screen then, so 10 fps and 60 fps sources cover the same span. Evaluation clips are the scan's
windows cut with the scan's crops (`tagger.decode.frame_crops`), byte for byte; training clips
start anywhere a window fits, with a random crop position and flip. A still photo is a one-frame
video, its clip that frame T times. Clips stay uint8 `(T * crops, H, W, 3)` RGB and the model
wrapper normalises them, exactly as the exported ONNX graph does.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from tagger.decode import DECODERS, FrameSource, crop_origins, frame_crops, open_video
from tagger.errors import DecodeError, UsageError
from tagger.windows import frames_on_screen, plan_windows

VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
PHOTO_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")  # one-frame videos to PyAV
UCF_GROUP_REGEX = r"_g(\d+)_c\d+$"  # v_PlayingCello_g05_c01 -> group "05"


class DatasetError(UsageError):
    """The dataset folder, class list or split files cannot be used as given."""


@dataclass(frozen=True)
class DataConfig:
    """Where the videos are and how to split them."""

    root: str  # ROOT with one folder per class
    classes: tuple[str, ...] | None = None  # subset of class names; None: every class
    split_dir: str | None = None  # folder with classInd.txt, trainlist0K.txt, testlist0K.txt
    split: int = 1  # K of the official split files (UCF101 has 1, 2, 3)
    group_regex: str | None = None  # None: UCF101's gNN; the first capture group names a group
    val_fraction: float = 0.2  # share of groups (or files) held out when there are no split files
    seed: int = 0  # picks the held-out groups; the same seed gives the same split


@dataclass(frozen=True)
class ClipSpec:
    """How a clip is cut from a video: the model's input, in time and in pixels."""

    clip_len: int = 16  # T frames, as in C3D
    size: tuple[int, int] = (112, 112)  # (H, W) crop
    resize: int = 128  # short side after resizing, before the crop
    fps: float = 25.0  # frames are sampled at this rate (UCF101's native rate)
    frame_step: int = 1  # every frame_step-th frame at `fps`
    crops: int = 1  # C crops per frame along its long side, as the contract's `crops`; 1: centre

    @property
    def frame_interval(self) -> float:
        """Seconds between two sampled frames."""
        return self.frame_step / self.fps

    @property
    def span(self) -> float:
        """Seconds one clip covers."""
        return self.clip_len * self.frame_interval


@dataclass(frozen=True)
class VideoItem:
    """One video of the dataset."""

    path: str
    label: int
    group: str | None  # the group it belongs to; None where the name has none


@dataclass(frozen=True)
class DataSplit:
    """The classes and the two sides of the split, with how it was made."""

    classes: tuple[str, ...]
    train: tuple[VideoItem, ...]
    val: tuple[VideoItem, ...]
    method: str  # "official split K", "group" or "per-file"
    warnings: tuple[str, ...] = ()


def parse_classes(value: str | None) -> tuple[str, ...] | None:
    """`--classes`: comma-separated names, or a file with one name per line (or commas)."""
    if not value:
        return None
    path = Path(value)
    text = path.read_text() if path.is_file() else value
    names = tuple(n.strip() for n in re.split(r"[,\n]", text) if n.strip())
    return names or None


def make_split(config: DataConfig) -> DataSplit:
    """Find the videos under `config.root` and split them (split files, groups, or files)."""
    root = Path(config.root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist: pass the folder that holds "
                           "one sub-folder per class")
    if not 0.0 < config.val_fraction < 1.0:
        raise DatasetError(f"--val-fraction {config.val_fraction} must be between 0 and 1")
    if config.split_dir is not None:
        return official_split(root, Path(config.split_dir), config.split, config.classes)
    classes, videos = discover_videos(root, config.classes)
    return group_split(classes, videos, config.group_regex, config.val_fraction, config.seed)


def discover_videos(root: Path, wanted: tuple[str, ...] | None) -> tuple[tuple[str, ...],
                                                                          list[tuple[Path, int]]]:
    """Class names (sorted folder names, or `wanted`) and every (video or photo, label) in them."""
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if wanted is not None:
        unknown = [c for c in wanted if c not in folders]
        if unknown:
            raise DatasetError(f"class {unknown[0]!r} has no folder in {root}: choose from "
                               f"{', '.join(folders) or '(no folders)'}")
        folders = list(dict.fromkeys(wanted))
    if len(folders) < 2:
        raise DatasetError(f"{root} has {len(folders)} class folder(s): a classifier needs at "
                           "least two ROOT/<class>/ folders of videos")
    videos = []
    for label, name in enumerate(folders):
        files = sorted(p for p in (root / name).rglob("*")
                       if p.suffix.lower() in VIDEO_EXTENSIONS + PHOTO_EXTENSIONS and p.is_file())
        if not files:
            raise DatasetError(f"class folder {root / name} has no videos "
                               f"({', '.join(VIDEO_EXTENSIONS)}) or photos "
                               f"({', '.join(PHOTO_EXTENSIONS)}): add some or leave it out "
                               "with --classes")
        videos += [(path, label) for path in files]
    return tuple(folders), videos


def group_split(classes: tuple[str, ...], videos: list[tuple[Path, int]], group_regex: str | None,
                val_fraction: float, seed: int) -> DataSplit:
    """Hold out whole groups (never one group on both sides); per file only if none has a group."""
    try:
        pattern = re.compile(group_regex or UCF_GROUP_REGEX)
    except re.error as exc:
        raise DatasetError(f"--group-regex {group_regex!r} is not a valid regex ({exc})") from exc
    items = [VideoItem(str(path), label, _group_of(path, pattern)) for path, label in videos]
    notes = []
    if all(item.group is None for item in items):
        notes.append(f"warning: no file name matches the group pattern {pattern.pattern!r}, so "
                     "the split is per file and clips of one scene may land on both sides: pass "
                     "--group-regex or official split files")
        val = _per_file_val(items, val_fraction, seed)
        method = "per-file"
    else:
        ungrouped = sum(item.group is None for item in items)
        if ungrouped:
            notes.append(f"warning: {ungrouped} file(s) match no group pattern "
                         f"{pattern.pattern!r}; each is treated as a group of its own")
        keys = sorted({item.group or f"file:{item.path}" for item in items})
        if len(keys) < 2:
            raise DatasetError(f"all videos are in one group ({keys[0]}): a split needs two or "
                               "more groups; pass --group-regex or official split files")
        random.Random(seed).shuffle(keys)
        held_out = set(keys[:min(len(keys) - 1, max(1, round(val_fraction * len(keys))))])
        val = {item.path for item in items if (item.group or f"file:{item.path}") in held_out}
        method = "group"
    train = tuple(item for item in items if item.path not in val)
    held = tuple(item for item in items if item.path in val)
    for label, name in enumerate(classes):
        if not any(item.label == label for item in held):
            notes.append(f"warning: class {name} has no validation videos in this split")
    return DataSplit(classes, train, held, method, tuple(notes))


def _group_of(path: Path, pattern: re.Pattern) -> str | None:
    match = pattern.search(path.stem)
    if match is None:
        return None
    return match.group(1) if pattern.groups else match.group(0)


def _per_file_val(items: list[VideoItem], val_fraction: float, seed: int) -> set[str]:
    """Per class, a seeded sample of files (at least one where a class has two or more)."""
    val: set[str] = set()
    rng = random.Random(seed)
    for label in sorted({item.label for item in items}):
        paths = sorted(item.path for item in items if item.label == label)
        rng.shuffle(paths)
        count = min(len(paths) - 1, max(1, round(val_fraction * len(paths))))
        val.update(paths[:count])
    return val


def official_split(root: Path, split_dir: Path, split: int,
                   wanted: tuple[str, ...] | None) -> DataSplit:
    """Train on `trainlist0K.txt`, validate on `testlist0K.txt`, exactly as listed."""
    class_ind = _read_class_ind(split_dir / "classInd.txt")
    names = list(class_ind.values())
    if wanted is not None:
        unknown = [c for c in wanted if c not in names]
        if unknown:
            raise DatasetError(f"class {unknown[0]!r} is not in {split_dir / 'classInd.txt'}: "
                               f"choose from {', '.join(names)}")
        names = [n for n in names if n in set(wanted)]
    classes = tuple(names)
    sides = [_read_list(split_dir / f"{kind}list{split:02d}.txt", root, class_ind, classes)
             for kind in ("train", "test")]
    for kind, side in zip(("train", "test"), sides):
        if not side:
            raise DatasetError(f"{split_dir / f'{kind}list{split:02d}.txt'} lists no videos of "
                               f"the chosen classes ({', '.join(classes)})")
    return DataSplit(classes, sides[0], sides[1], f"official split {split}")


def _read_class_ind(path: Path) -> dict[int, str]:
    """`classInd.txt`: lines `INDEX ClassName`, INDEX counting from 1."""
    if not path.is_file():
        raise DatasetError(f"split file {path} not found: --split-dir must hold classInd.txt, "
                           "trainlist0K.txt and testlist0K.txt (UCF101's ucfTrainTestlist)")
    class_ind: dict[int, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit() or int(parts[0]) in class_ind:
            raise DatasetError(f"{path} line {number}: expected 'INDEX ClassName' with a new "
                               f"index, got {line.strip()!r}")
        class_ind[int(parts[0])] = parts[1]
    return class_ind


def _read_list(path: Path, root: Path, class_ind: dict[int, str],
               classes: tuple[str, ...]) -> tuple[VideoItem, ...]:
    """A train/test list: `Class/v_Class_gNN_cNN.avi [INDEX]`; other classes' lines skipped."""
    if not path.is_file():
        raise DatasetError(f"split file {path} not found: --split K needs trainlist0K.txt and "
                           f"testlist0K.txt in {path.parent}")
    known = set(class_ind.values())
    items = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        where = f"{path} line {number}"
        relative = parts[0].replace("\\", "/")
        class_name = relative.split("/")[0] if "/" in relative else ""
        if class_name not in known:
            raise DatasetError(f"{where}: class {class_name!r} of {relative} is not in "
                               f"classInd.txt")
        if len(parts) > 1 and class_ind.get(int(parts[1]) if parts[1].isdigit() else -1) != class_name:
            raise DatasetError(f"{where}: label {parts[1]} is not {class_name} in classInd.txt")
        if class_name not in classes:
            continue
        video = root / relative
        if not video.is_file():
            raise DatasetError(f"{where}: {video} does not exist: restore the video or use the "
                               "split files that match this copy of the dataset")
        items.append(VideoItem(str(video), classes.index(class_name),
                               _group_of(video, re.compile(UCF_GROUP_REGEX))))
    return tuple(items)


def read_clip(path: str, spec: ClipSpec, position: float | None,
              rng: np.random.Generator | None = None, flip: bool = False) -> np.ndarray:
    """Decode one clip the way the scan does: uint8 `(T * crops, H, W, 3)` RGB, frame-major.

    The decoders are tried in the scan's order (`tagger.decode.DECODERS`), each starting over when
    the one before failed, and every sample time shows the frame on screen then
    (`tagger.windows`), so an evaluation clip is byte for byte a window the scan feeds the model.
    A still photo is a one-frame video: its clip is that frame T times, as the scan's.

    Args:
        path: the video (or photo) file.
        spec: clip length, crop, resize, fps, frame step and crops per frame.
        position: which of the scan's windows, 0 (the first) to 1 (the last, ending at the
            video's end), cut with the scan's crops; None: a window starting anywhere one fits
            and a random crop position, drawn from `rng` (training).
        rng: random source for training clips.
        flip: mirror left-right (training augmentation).

    Raises:
        DecodeError: no decoder could read the frames; the message gives each decoder's reason.
    """
    reasons = []
    for decoder in DECODERS:
        try:
            source = open_video(path, spec.resize, (decoder,), threads=1)  # one thread per worker
        except DecodeError as exc:
            reasons.append(str(exc))
            continue
        try:
            indices = clip_frame_indices(source, spec, position, rng)  # (T,)
            decoded = {int(i): frame for i, frame in source.read(np.unique(indices))}
        except DecodeError as exc:  # failed midway: the next decoder starts over, as in a scan
            reasons.append(f"{decoder}: {exc}")
            continue
        finally:
            source.close()
        frames = np.stack([decoded[int(i)] for i in indices])  # (T, H', W', 3)
        if position is None:
            return _training_crops(frames, spec, rng, flip)
        clip = frame_crops(frames, spec.size, spec.crops)  # (T, C, H, W, 3)
        return clip.reshape(-1, *clip.shape[2:])  # (T*C, H, W, 3), as the scan's stream_windows
    raise DecodeError(f"{path}: {'; '.join(reasons)}")


def clip_frame_indices(source: FrameSource, spec: ClipSpec, position: float | None,
                       rng: np.random.Generator | None) -> np.ndarray:
    """The (T,) frame indices of one clip of `source`: a scan window, or a random one (None)."""
    duration = source.info.duration
    if position is not None:
        plan = plan_windows(source.timestamps, duration, spec.clip_len, spec.frame_interval,
                            keyframes=source.keyframes)
        return plan.frame_indices[round(position * (len(plan) - 1))]
    latest = max(0.0, duration - spec.span)  # the scan's last window starts there too
    start = rng.uniform(0.0, latest)
    return frames_on_screen(source.timestamps, duration, np.array([start]), spec.clip_len,
                            spec.frame_interval, source.keyframes)[0]


def _training_crops(frames: np.ndarray, spec: ClipSpec, rng: np.random.Generator,
                    flip: bool) -> np.ndarray:
    """Crops of `(T, H', W', 3)` frames at a random place: `(T * crops, H, W, 3)`.

    One crop goes anywhere in the frame. Several keep the scan's spread along the long side
    (`crop_origins`) and move together across the short side.
    """
    if flip:
        frames = frames[:, :, ::-1]
    height, width = frames.shape[1:3]
    crop_h, crop_w = spec.size
    top = int(rng.integers(0, height - crop_h + 1))
    left = int(rng.integers(0, width - crop_w + 1))
    if spec.crops == 1:
        origins = [(top, left)]
    elif height > width:  # portrait: the scan's crops run top to bottom
        origins = [(y, left) for y, _ in crop_origins(height, width, spec.size, spec.crops)]
    else:
        origins = [(top, x) for _, x in crop_origins(height, width, spec.size, spec.crops)]
    clip = np.stack([frames[:, y:y + crop_h, x:x + crop_w] for y, x in origins], axis=1)
    return clip.reshape(-1, *clip.shape[2:])  # (T*C, H, W, 3) frame-major


def worker_context(workers: int) -> str | None:
    """The start method for DataLoader worker processes: "forkserver" where there is one.

    A plain fork copies the training process mid-flight, with its progress display's refresh thread
    and torch's threads; a worker forked while one of them held a lock waited on it forever inside
    decord (seen once in CI). Forkserver workers start from a process with no such threads.
    """
    if workers <= 0 or "forkserver" not in torch.multiprocessing.get_all_start_methods():
        return None
    # The server imports torch and this module once; each worker forked from it then starts in
    # milliseconds instead of importing them again (workers restart every epoch).
    torch.multiprocessing.set_forkserver_preload(["training.data"])
    return "forkserver"


class ClipDataset(Dataset):
    """Clips of a list of videos: random ones for training, uniform ones for evaluation.

    Item `i` is clip `i % clips_per_video` of video `i // clips_per_video`, returned as
    (uint8 `(T * crops, H, W, 3)`, label, video index). Evaluation clip k of n is the scan's
    window k / (n - 1) of the way through the video (n = 1: the middle one). Decoding happens in
    `__getitem__`, so in the DataLoader's workers, never in the main process.
    """

    def __init__(self, items: tuple[VideoItem, ...], spec: ClipSpec, *, train: bool,
                 clips_per_video: int = 1, flip: bool = True, seed: int = 0) -> None:
        if max(spec.size) > spec.resize:
            raise DatasetError(f"crop {list(spec.size)} does not fit in frames resized to a "
                               f"short side of {spec.resize}: raise --resize or lower --size")
        self.items = items
        self.spec = spec
        self.train = train
        self.clips_per_video = clips_per_video
        self.flip = flip and train
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Training clips depend on (seed, epoch, index) only: resumable and worker-independent."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items) * self.clips_per_video

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        video, clip = divmod(index, self.clips_per_video)
        item = self.items[video]
        if self.train:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            frames = read_clip(item.path, self.spec, None, rng,
                               flip=self.flip and bool(rng.integers(0, 2)))
        else:
            position = 0.5 if self.clips_per_video == 1 else clip / (self.clips_per_video - 1)
            frames = read_clip(item.path, self.spec, position)
        return torch.from_numpy(np.ascontiguousarray(frames)), item.label, video


def parity_clips(items: tuple[VideoItem, ...], spec: ClipSpec, count: int) -> np.ndarray:
    """Up to `count` evaluation clips, one per video, for the export's parity check."""
    picked = items[:: max(1, len(items) // max(1, count))][:count]
    return np.stack([read_clip(item.path, spec, 0.5) for item in picked])  # (N, T*C, H, W, 3)
