"""Score an exported model on labelled videos the way `tagger scan` does, and count its mistakes.

Videos come from the shared clips (`../shared/data`, labels from its MANIFEST.tsv) and from any
folder laid out as `<label>/<video>`. Label `other` (also `none`, `negative`, `NoInstrument`) means
"no instrument": such a video must get no tag at all. Everything runs through the tagger's own
runtime code, so what is measured is what a scan stores: `tagger.model.load_model` (onnxruntime,
contract from the file's metadata) and the scan's per-video step `tagger.step.score_video` (PyAV, then decord, short-side
resize, centre crop, frames sampled at the model's fps/frame_step, windows of clip_len). A video
gets a tag when any of its windows reaches that label's threshold (the model's `tagger.threshold`).

    python bench/eval_default.py                        # exports/default.onnx on the shared clips
    python bench/eval_default.py --corpus               # ... and the corpus's held-out groups, per label
    python bench/eval_default.py --model exports/x.onnx ~/footage/labelled --no-shared --json out.json

`--corpus` scores the test split of `../shared/data/corpus` (fold 0 of 5 by group, as
`training/build_default.py` holds it out: no photo or video of those groups trained or calibrated
anything) and prints per-label recall and precision, the confusions, and how many `NoInstrument`
items and never-tagged instruments got a tag; it uses `training.corpus` and `training.calibrate`,
which need numpy only.

Needs onnxruntime, numpy and the tagger package only (no torch).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tagger.model import LoadedModel, load_model
from tagger.step import VIDEO, VideoFailure, VideoJob, score_video

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT / "exports" / "default.onnx"
SHARED_DATA = ROOT.parent / "shared" / "data"
NEGATIVE_LABELS = {"other", "none", "negative", "noinstrument", "background"}
VIDEO_SUFFIXES = {".avi", ".mp4", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"}
BATCH = 8  # windows per onnxruntime call, as the scanner batches them


@dataclass
class VideoResult:
    """What the model made of one labelled video."""

    path: str
    label: str  # expected tag, or "other" for footage without instruments
    tags: dict[str, float] = field(default_factory=dict)  # label -> best window score, if tagged
    top: dict[str, float] = field(default_factory=dict)  # the 3 best labels' best window scores
    best: list[float] = field(default_factory=list)  # every label's best window score, in model order
    windows: int = 0
    seconds_inference: float = 0.0
    error: str | None = None

    @property
    def negative(self) -> bool:
        """Footage without instruments: it must get no tag."""
        return self.label.lower() in NEGATIVE_LABELS

    @property
    def correct(self) -> bool:
        """Positives: the expected tag is among the tags. Negatives: no tag at all."""
        if self.error:
            return False
        return not self.tags if self.negative else self.label in self.tags


def manifest_videos(data_dir: Path) -> list[tuple[Path, str]]:
    """(path, label) of every decodable clip listed in `data_dir/MANIFEST.tsv`."""
    with open(data_dir / "MANIFEST.tsv", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return [(data_dir / row["file"], row["label"]) for row in rows
            if row["file"].startswith("clips/") and row["label"] != "broken"]


def folder_videos(root: Path) -> list[tuple[Path, str]]:
    """(path, label) of every video in `root/<label>/`, recursively."""
    return [(path, label_dir.name)
            for label_dir in sorted(p for p in root.iterdir() if p.is_dir())
            for path in sorted(label_dir.rglob("*"))
            if path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES]


def window_scores(model: LoadedModel, path: Path, hop: float | None = None) -> tuple[np.ndarray, float]:
    """Scores `(W, K)` of every window of `path`, and the seconds spent in onnxruntime.

    Raises:
        RuntimeError: no decoder could read the video.
    """
    spent = 0.0

    def timed(inputs: np.ndarray) -> np.ndarray:
        nonlocal spent
        start = time.perf_counter()
        scores = model.scores(inputs)
        spent += time.perf_counter() - start
        return scores

    job = VideoJob.for_model(model.contract, path, hop=hop, chunk=BATCH)
    outcome = score_video(job, {VIDEO: timed}, {VIDEO: len(model.contract.labels)}, {VIDEO: BATCH})
    if isinstance(outcome, VideoFailure):
        raise RuntimeError(outcome.reason)
    return outcome.scores[VIDEO], spent


def evaluate_video(model: LoadedModel, path: Path, label: str, hop: float | None = None) -> VideoResult:
    """Tag one video with `model` and compare with its label."""
    result = VideoResult(path=str(path), label=label)
    try:
        scores, result.seconds_inference = window_scores(model, path, hop)
    except RuntimeError as exc:
        result.error = str(exc)
        return result
    contract = model.contract
    best = scores.max(axis=0)  # (K,) each label's best window
    result.best = [round(float(x), 6) for x in best]
    result.windows = len(scores)
    for k in np.argsort(-best):
        name = contract.labels[k]
        if name != contract.background and len(result.top) < 3:
            result.top[name] = round(float(best[k]), 4)
        if name in contract.tag_labels and best[k] >= contract.threshold_for(name):
            result.tags[name] = round(float(best[k]), 4)
    return result


def summarise(results: list[VideoResult]) -> dict:
    """Recall on instrument videos, false tags on the others, time per window."""
    positives = [r for r in results if not r.negative]
    negatives = [r for r in results if r.negative]
    windows = sum(r.windows for r in results)
    return {
        "instrument_videos": len(positives),
        "instrument_videos_correct": sum(r.correct for r in positives),
        "instrument_videos_with_other_tags": sum(bool(set(r.tags) - {r.label}) for r in positives),
        "other_videos": len(negatives),
        "other_videos_wrongly_tagged": sum(bool(r.tags) for r in negatives),
        "failed": sum(r.error is not None for r in results),
        "windows": windows,
        "ms_per_window": round(1000 * sum(r.seconds_inference for r in results) / max(windows, 1), 1),
    }


def evaluate(model: LoadedModel, videos: list[tuple[Path, str]], hop: float | None = None,
             echo: bool = True) -> tuple[list[VideoResult], dict]:
    """Evaluate every (path, label); print a line per video when `echo`."""
    results = []
    for path, label in videos:
        result = evaluate_video(model, path, label, hop)
        results.append(result)
        if echo:
            mark = "ok " if result.correct else "BAD"
            shown = result.error or ", ".join(f"{k}={v:.3f}" for k, v in result.top.items())
            print(f"{mark} {Path(path).name[:44]:44s} {label:14s} tags={sorted(result.tags) or '-'}"
                  f"  top: {shown}", flush=True)
    return results, summarise(results)


def main(argv: list[str] | None = None) -> int:
    """Command line: evaluate, print a line per video and the summary; 2 if there is nothing to do."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="*", type=Path, help="folders laid out as <label>/<video>")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="ONNX model to evaluate")
    parser.add_argument("--data", type=Path, default=SHARED_DATA, help="shared data with MANIFEST.tsv")
    parser.add_argument("--no-shared", action="store_true", help="skip the shared clips")
    parser.add_argument("--hop", type=float, default=None,
                        help="seconds between windows (default: one window length, as a scan)")
    parser.add_argument("--json", type=Path, help="write per-video results and the summary here")
    parser.add_argument("--corpus", nargs="?", type=Path, const=SHARED_DATA / "corpus", default=None,
                        help="also score the held-out groups of this corpus (default ../shared/data/corpus)")
    args = parser.parse_args(argv)

    if args.corpus is not None and not (args.corpus / "MANIFEST.tsv").is_file():
        print(f"Error: --corpus {args.corpus} has no MANIFEST.tsv: pass the corpus folder "
              "(../shared/data/corpus)", file=sys.stderr)
        return 2
    videos: list[tuple[Path, str]] = []
    if not args.no_shared:
        if (args.data / "MANIFEST.tsv").is_file():
            videos += manifest_videos(args.data)
        else:
            print(f"no shared clips at {args.data} (pass --data or --no-shared)", file=sys.stderr)
    for folder in args.folders:
        videos += folder_videos(folder)
    if not videos:
        print("no videos to evaluate", file=sys.stderr)
        return 2
    model = load_model(args.model, device="cpu")
    c = model.contract
    print(f"{args.model}: {len(c.labels)} labels, clip_len {c.clip_len} at {c.fps:g} fps / step "
          f"{c.frame_step} ({c.window_seconds:g} s windows), {c.size[0]}x{c.size[1]} crop of "
          f"short side {c.resize}")
    results, summary = evaluate(model, videos, args.hop)
    s = summary
    print(f"instrument videos tagged correctly: {s['instrument_videos_correct']}/"
          f"{s['instrument_videos']} ({s['instrument_videos_with_other_tags']} with other tags too); "
          f"other videos wrongly tagged: {s['other_videos_wrongly_tagged']}/{s['other_videos']}; "
          f"failed: {s['failed']}; {s['ms_per_window']} ms per window ({s['windows']} windows)")
    tables = {}
    if args.corpus is not None:
        tables["held_out_groups"] = held_out_table(model, args.corpus)
    if not args.no_shared and results:
        tables["shared_clips"] = clips_table(model, results)
    if args.json:
        args.json.write_text(json.dumps({"model": str(args.model), "summary": summary, "tables": tables,
                                         "videos": [asdict(r) for r in results]}, indent=2) + "\n")
    return 0


def _table(model: LoadedModel, scores: np.ndarray, truth: list[str], title: str) -> dict:
    from training.calibrate import format_table, per_label_table

    c = model.contract
    tags = list(c.tag_labels)
    thresholds = {tag: c.threshold_for(tag) for tag in tags}
    table = per_label_table(scores, list(c.labels), truth, tags, thresholds, c.background or "")
    print(format_table(table, f"\n{title}"))
    return table


def held_out_table(model: LoadedModel, corpus: Path) -> dict:
    """Per-label table of the model on the corpus's test groups, scored as a scan scores them."""
    from training.corpus import TEST_FOLDS, read_manifest

    items = [item for item in read_manifest(corpus)[0] if item.in_test_split]
    scores = np.stack([window_scores(model, item.path)[0].max(axis=0) for item in items])
    return _table(model, scores, [item.head_class for item in items],
                  f"held-out corpus groups ({len(items)} files, fold 0 of {TEST_FOLDS} by split group):")


def clips_table(model: LoadedModel, results: list[VideoResult]) -> dict:
    """Per-label table of the model on the shared clips (labels the model knows; others are 'no instrument')."""
    from training.corpus import LABEL_POLICY

    c = model.contract
    kept = [r for r in results if r.error is None]
    scores = np.array([r.best for r in kept])
    truth = [c.background if r.negative else LABEL_POLICY.get(r.label, r.label) for r in kept]
    return _table(model, scores, truth, f"shared clips ({len(kept)} videos):")


def run(argv: list[str] | None = None) -> int:
    """`main`, with the tagger's errors (a missing model, an unusable corpus) as one line and their exit code."""
    from tagger.errors import TaggerError

    try:
        return main(argv)
    except TaggerError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    raise SystemExit(run())
