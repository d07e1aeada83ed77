"""training.data: splits without leaks, official split files obeyed exactly, clips sampled by time.

Split tests use placeholder files (empty `.avi` files): discovery and splitting only read names.
Clip tests use real generated videos (PyAV, MPEG-4 in AVI) and, where present, real UCF101 clips.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from training.data import (
    VIDEO_EXTENSIONS,
    ClipDataset,
    ClipSpec,
    DataConfig,
    DatasetError,
    VideoItem,
    make_split,
    nearest_frames,
    parse_classes,
    read_clip,
    resized_size,
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
                      f"({', '.join(VIDEO_EXTENSIONS)}): add some or leave it out with --classes\n")


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


def test_resize_keeps_the_aspect_ratio():
    assert resized_size(320, 240, 128) == (171, 128)  # UCF101 -> C3D
    assert resized_size(144, 256, 128) == (128, 228)  # portrait
    assert resized_size(1280, 720, 64) == (114, 64)


def test_nearest_frames_picks_the_closest_timestamp():
    stamps = np.array([0.0, 0.04, 0.08, 0.12])
    assert nearest_frames(stamps, np.array([0.0, 0.03, 0.05, 0.2])).tolist() == [0, 1, 1, 3]


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
