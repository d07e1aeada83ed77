"""Would an INT8 default model keep the default model's tags? Quantise it and compare, clip by clip.

    python bench/int8_trial.py [--out bench/int8_trial.json]

Quantises `exports/default.onnx` with onnxruntime's static QDQ quantiser (per-channel int8
weights, reduced to 7 bits so CPUs without VNNI cannot saturate, uint8 activations, Conv and
Clip quantised, stem and head convolutions kept in float), calibrated on the windows of the
even-numbered shared clips only, then scores every shared clip the way `tagger scan` does with
both models and reports: the largest score difference on calibration and held-out clips, how many
(window, label) threshold decisions flip, whether each clip's set of tags stays the same, and the
milliseconds per window of each model. Needs `../shared/data`; writes nothing to `exports/`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from tagger.model import LoadedModel, load_model
from tagger.step import VideoJob, window_inputs
from training.quantise import quantise

ROOT = Path(__file__).resolve().parents[1]
CLIPS = ROOT.parent / "shared" / "data" / "clips"


def scan_windows(model: LoadedModel, path: Path) -> np.ndarray:
    """The uint8 windows `tagger scan` feeds the model for one video, (N, T, H, W, 3)."""
    return window_inputs(VideoJob.for_model(model.contract, path))


def ms_per_window(model: LoadedModel, windows: np.ndarray, seconds: float = 4.0) -> float:
    batch = windows[: model.auto_batch_size()]
    model.scores(batch)
    began, runs = time.perf_counter(), 0
    while time.perf_counter() - began < seconds:
        model.scores(batch)
        runs += 1
    return (time.perf_counter() - began) / runs / len(batch) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "exports" / "default.onnx")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("int8_trial.json"))
    args = parser.parse_args()
    if not CLIPS.is_dir():
        raise SystemExit(f"{CLIPS} not found: this comparison needs the shared clips")

    reference = load_model(args.model, "cpu")
    c = reference.contract
    clips = sorted(p for p in CLIPS.iterdir() if p.is_file())
    windows = [scan_windows(reference, clip) for clip in clips]
    calibration = [w for i, clip_windows in enumerate(windows) if i % 2 == 0 for w in clip_windows]
    tags_only = np.array([label != c.background for label in c.labels])
    thresholds = np.array([c.threshold_for(label) if tag else np.inf for label, tag in zip(c.labels, tags_only)])

    with tempfile.TemporaryDirectory() as tmp:
        int8_path = Path(tmp) / "default_int8.onnx"
        quantise(args.model, int8_path, calibration)
        int8 = load_model(int8_path, "cpu")
        rows = []
        for i, (clip, clip_windows) in enumerate(zip(clips, windows)):
            a, b = reference.scores(clip_windows)[:, tags_only], int8.scores(clip_windows)[:, tags_only]
            hit_a, hit_b = a >= thresholds[tags_only], b >= thresholds[tags_only]
            tag_labels = [label for label, tag in zip(c.labels, tags_only) if tag]
            rows.append({"clip": clip.name, "calibration": i % 2 == 0,
                         "max_abs_diff": float(np.abs(a - b).max()),
                         "decisions": int(hit_a.size), "flipped": int((hit_a != hit_b).sum()),
                         "tags": sorted(tag_labels[j] for j in np.flatnonzero(hit_a.any(0))),
                         "int8_tags": sorted(tag_labels[j] for j in np.flatnonzero(hit_b.any(0)))})
        speed = {"float32": ms_per_window(reference, windows[0]), "int8": ms_per_window(int8, windows[0])}
        size_mb = int8_path.stat().st_size / 1e6

    results = {"ms_per_window": speed, "int8_mb": size_mb, "per_clip": rows}
    for part, chosen in [("calibration", [r for r in rows if r["calibration"]]),
                         ("held_out", [r for r in rows if not r["calibration"]])]:
        results[part] = {
            "clips": len(chosen), "clips_with_same_tags": sum(r["tags"] == r["int8_tags"] for r in chosen),
            "max_abs_diff": max(r["max_abs_diff"] for r in chosen),
            "window_decisions": sum(r["decisions"] for r in chosen),
            "window_decisions_flipped": sum(r["flipped"] for r in chosen),
        }
    for r in rows:
        same = "same tags" if r["tags"] == r["int8_tags"] else f"tags {r['tags']} -> {r['int8_tags']}"
        print(f"{'calib' if r['calibration'] else 'held '}  {r['clip']:<48} max |diff| {r['max_abs_diff']:.3f}  "
              f"flipped {r['flipped']:>2} of {r['decisions']:>3}  {same}")
    print(f"\nms per window: float32 {speed['float32']:.1f}, int8 {speed['int8']:.1f} "
          f"({speed['float32'] / speed['int8']:.2f}x); int8 file {size_mb:.1f} MB")
    for part in ("calibration", "held_out"):
        p = results[part]
        print(f"{part} clips: same tags {p['clips_with_same_tags']}/{p['clips']}, max |diff| {p['max_abs_diff']:.3f}, "
              f"window decisions flipped {p['window_decisions_flipped']} of {p['window_decisions']}")
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"results written to {args.out}")


if __name__ == "__main__":
    main()
