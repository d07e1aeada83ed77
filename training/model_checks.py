"""What the default model's build measures of the file it wrote: speed, and its INT8 copy's tags.

`training/build_default.py` calls these after export; each works on ONNX files through the
tagger's own runtime (`tagger.model.load_model`, `tagger.step.window_inputs`), so what is
measured is what a scan runs.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

from tagger.contract import ModelContract

ROOT = Path(__file__).resolve().parents[1]


def time_windows(onnx_path: Path, contract: ModelContract, batch: int, repeats: int = 7) -> float:
    """Milliseconds per window for onnxruntime on this machine's CPU (the fastest of `repeats`)."""
    from tagger.model import load_model

    model = load_model(onnx_path, "cpu")
    frames = np.random.default_rng(0).integers(0, 256, (batch, contract.input_frames, *contract.size, 3), np.uint8)
    model.scores(frames)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.scores(frames)
        times.append((time.perf_counter() - start) / batch)
    return round(1000 * min(times), 1)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ship_int8(float_path: Path, target: Path, fit_files: list[Path], held_out: list[Path],
              contract: ModelContract, calibration_files: int = 120) -> dict:
    """Quantise `float_path` to `target`, calibrated on windows of fit files only, and compare the
    two models' tags on the held-out files, each scored as a scan scores it."""
    from tagger.model import load_model
    from tagger.step import VideoJob, window_inputs
    from training.quantise import quantise

    rng = np.random.default_rng(0)
    chosen = [fit_files[i] for i in sorted(rng.choice(len(fit_files), min(calibration_files, len(fit_files)), replace=False))]
    calibration = [w for path in chosen for w in window_inputs(VideoJob.for_model(contract, path))[:2]]
    quantise(float_path, target, calibration)
    original, quantised = load_model(float_path, "cpu"), load_model(target, "cpu")
    tags = [k for k, label in enumerate(contract.labels) if label in contract.tag_labels]
    limits = np.array([contract.threshold_for(contract.labels[k]) for k in tags])
    changed, flipped, decisions, largest = [], 0, 0, 0.0
    for path in held_out:
        windows = window_inputs(VideoJob.for_model(contract, path))
        a, b = original.scores(windows)[:, tags], quantised.scores(windows)[:, tags]
        hit_a, hit_b = a >= limits, b >= limits
        largest, decisions = max(largest, float(np.abs(a - b).max())), decisions + hit_a.size
        flipped += int((hit_a != hit_b).sum())
        if (hit_a.any(0) != hit_b.any(0)).any():
            changed.append(path.name)
    timing = {"float32": _ms_per_window(original, windows), "int8": _ms_per_window(quantised, windows)}
    return {
        "calibration": f"{len(calibration)} windows of {len(chosen)} files of the fit groups",
        "held_out_files": len(held_out), "files_whose_tags_changed": changed,
        "window_decisions": decisions, "window_decisions_flipped": flipped, "max_abs_score_diff": round(largest, 4),
        "ms_per_window": timing,
        "summary": f"{len(held_out) - len(changed)} of {len(held_out)} held-out files keep their tags; "
                   f"{flipped} of {decisions} window decisions flip; max score change {largest:.3f}; "
                   f"{timing['float32']} -> {timing['int8']} ms per window",
    }


def write_train_metadata(path: Path, train: dict) -> None:
    """Replace `tagger.train` in the ONNX file at `path` (the INT8 copy says what it is)."""
    import onnx

    graph = onnx.load(str(path))
    for prop in graph.metadata_props:
        if prop.key == "tagger.train":
            prop.value = json.dumps(train)
    onnx.save(graph, str(path))


def _ms_per_window(model, windows: np.ndarray, repeats: int = 5) -> float:
    batch = np.concatenate([windows] * 8)[:8]
    model.scores(batch)
    best = min(_timed(model, batch) for _ in range(repeats))
    return round(1000 * best / len(batch), 1)


def _timed(model, batch: np.ndarray) -> float:
    start = time.perf_counter()
    model.scores(batch)
    return time.perf_counter() - start


def scan_speed(model: Path, runs: int = 2) -> dict:
    """`bench/scan_speed.py` on `model` in a subprocess, `runs` times: the fastest run goes on the card
    (on a shared machine the slower ones measure the neighbours' load), every run is listed."""
    import subprocess
    import tempfile

    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for run in range(runs):
            out = Path(scratch) / f"speed{run}.json"
            subprocess.run([sys.executable, str(ROOT / "bench" / "scan_speed.py"), "--model", str(model), "--out",
                            str(out)], check=True, capture_output=True, text=True)
            results.append(json.loads(out.read_text()))
    best = min(results, key=lambda r: r["scan_s"])
    speeds = [round(r["speed_x"]["scan"], 1) for r in results]
    return {"video_seconds": best["corpus_video_s"], "scan_s": round(best["scan_s"], 2),
            "speed_x": round(best["speed_x"]["scan"], 1), "efficiency": round(best["efficiency"], 2),
            "runs": [{"speed_x": x, "efficiency": round(r["efficiency"], 2)} for x, r in zip(speeds, results)],
            "summary": f"{best['speed_x']['scan']:.1f}x real time, efficiency {best['efficiency']:.2f}, the faster "
                       f"of {runs} runs ({', '.join(f'{x:.1f}x' for x in speeds)}; bench/scan_speed.py, "
                       f"{best['machine']})"}
