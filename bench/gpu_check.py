"""Check and time the CUDA path on a machine with a GPU: one prepared run, one JSON record.

    python bench/gpu_check.py [--clips DIR] [--json OUT] [--model PATH]

Needs onnxruntime-gpu (`pip uninstall -y onnxruntime && pip install onnxruntime-gpu`) and the real
clips (`../shared/data/clips`, or --clips). In one process, with the shipped default (or --model):

1. The session starts on CUDAExecutionProvider and runs through IO binding (tagger.model).
2. Real windows of the clips, scored on CUDA and on the CPU: the largest score and feature
   differences (the GPU's kernels round differently; tags are what must hold, step 5).
3. The same windows on CUDA through IO binding and through a plain `session.run`: identical.
4. The batch size measured on the GPU (`tagger.model.measure_batch_size`): windows a second at each
   size tried, the size chosen; then windows a second with and without IO binding at that size.
5. `tagger scan CLIPS` with `--device cuda` and with `--device cpu`, each into a fresh database:
   seconds and real-time factor of each, and per video any label gained or lost or segment bound
   moved by more than one window (bench/tag_drift.py's comparison).

Exit 0 when every check holds (CUDA started, bound == plain, no tag changed between devices),
1 when one failed (each is printed), 2 when this machine cannot run the check (no CUDA).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CLIPS = ROOT.parent / "shared" / "data" / "clips"
SCORE_TOLERANCE = 1e-3  # CUDA against CPU: printed; a window score moving more than this is listed


def windows_of(model, clips: list[Path], most: int = 64) -> np.ndarray:
    """Up to `most` real windows of `clips`, as the scan gives them to `model`."""
    from tagger.step import VideoJob, window_inputs

    parts, total = [], 0
    for clip in clips:
        part = window_inputs(VideoJob.for_model(model.contract, clip))
        parts.append(part)
        total += len(part)
        if total >= most:
            break
    return np.concatenate(parts)[:most]


def rate(run, inputs: np.ndarray, batch: int, seconds: float = 2.0) -> float:
    """Windows a second of `run` over `inputs` in batches of `batch` (one untimed pass first)."""
    batches = [inputs[i : i + batch] for i in range(0, len(inputs), batch)]
    for part in batches:
        run(part)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for part in batches:
            run(part)
            done += len(part)
    return done / (time.perf_counter() - start)


def timed_scan(folder: Path, db: Path, device: str, model: str | None) -> tuple[float, dict]:
    from tag_drift import scan

    extra = ["--device", device] + (["--model", model] if model else [])
    start = time.perf_counter()
    summary = scan(folder, db, None, extra)
    return time.perf_counter() - start, summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=Path, default=CLIPS, help="folder of real videos (default: the shared clips)")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "gpu_check.json", help="where the record goes")
    parser.add_argument("--model", default=None, help="vision model (default: the shipped one)")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                        help="the device under test; cpu runs every step against the CPU (to check this script)")
    args = parser.parse_args()

    import onnxruntime as ort

    from tagger.model import BATCH_CANDIDATES, CUDA, load_model, measure_batch_size

    if args.device == "cuda" and CUDA not in ort.get_available_providers():
        print(f"onnxruntime {ort.__version__} has no CUDAExecutionProvider: "
              "pip uninstall -y onnxruntime && pip install onnxruntime-gpu, on a machine with a GPU", file=sys.stderr)
        return 2
    clips = sorted(p for p in args.clips.iterdir() if p.is_file()) if args.clips.is_dir() else []
    if not clips:
        print(f"no clips in {args.clips}: pass --clips DIR with real videos", file=sys.stderr)
        return 2

    failures: list[str] = []
    record: dict = {"onnxruntime": ort.__version__, "providers_available": ort.get_available_providers()}
    gpu = load_model(args.model, args.device)
    cpu = load_model(args.model, "cpu")
    record["session_providers"] = gpu.providers
    record["io_binding"] = gpu.io_binding  # as load_model set it
    if args.device == "cuda" and not (gpu.io_binding and CUDA in gpu.providers):
        failures.append("the CUDA session does not run on CUDA through IO binding")
    gpu.io_binding = True  # so --device cpu runs the same path

    inputs = windows_of(gpu, clips)
    on_gpu, on_cpu = gpu.run(inputs), cpu.run(inputs)
    score_diff = float(np.abs(on_gpu.scores - on_cpu.scores).max())
    record["cuda_vs_cpu"] = {"windows": len(inputs), "max_score_difference": score_diff,
                             "windows_over_tolerance": int((np.abs(on_gpu.scores - on_cpu.scores).max(axis=1)
                                                            > SCORE_TOLERANCE).sum())}
    if on_gpu.features is not None:
        record["cuda_vs_cpu"]["max_feature_difference"] = float(np.abs(on_gpu.features - on_cpu.features).max())

    gpu.io_binding = False
    plain = gpu.run(inputs)
    gpu.io_binding = True
    bound_equal = bool(np.array_equal(plain.scores, on_gpu.scores))
    record["bound_equals_plain"] = bound_equal
    if not bound_equal:
        failures.append("IO binding and a plain run gave different scores on the same GPU")

    measured = measure_batch_size(gpu, candidates=BATCH_CANDIDATES if args.device == "cuda" else (1, 2, 4))
    record["batch"] = {"rates": {str(k): v for k, v in measured.rates.items()}, "chosen": measured.chosen}
    print(measured.describe())
    many = np.concatenate([inputs] * max(1, -(-4 * measured.chosen // len(inputs))))
    with_binding = rate(gpu.run, many, measured.chosen)
    gpu.io_binding = False
    without = rate(gpu.run, many, measured.chosen)
    gpu.io_binding = True
    record["windows_per_second"] = {"io_binding": with_binding, "plain_run": without,
                                    "ratio": with_binding / without}
    print(f"at batch {measured.chosen}: {with_binding:.0f} windows/s with IO binding, "
          f"{without:.0f} plain ({with_binding / without:.2f}x)")

    from tag_drift import stored, video_changes

    device = args.device
    with tempfile.TemporaryDirectory() as tmp:
        seconds, summaries, found = {}, {}, {}
        for side in ("under_test", "cpu"):
            db = Path(tmp) / f"{side}.db"
            seconds[side], summaries[side] = timed_scan(args.clips, db, device if side == "under_test" else "cpu",
                                                        args.model)
            found[side] = stored(db)
    duration = float(summaries["cpu"].get("video_seconds") or 0)
    changes = {}
    for path in sorted(set(found["under_test"]) | set(found["cpu"])):  # from the CPU's tags to the device's
        if moved := video_changes(found["cpu"].get(path), found["under_test"].get(path), gpu.contract.window_seconds):
            changes[path] = moved
    record["scan"] = {"videos": len(found["cpu"]), "video_seconds": duration, "device": device,
                      "seconds": seconds, "providers": {k: v.get("providers") for k, v in summaries.items()},
                      "real_time": {k: duration / v for k, v in seconds.items()}, "tag_changes": changes}
    print(f"scan of {len(found['cpu'])} videos ({duration:.0f} s of video): {seconds['under_test']:.1f} s on "
          f"{device} ({duration / seconds['under_test']:.1f}x real time), {seconds['cpu']:.1f} s on cpu "
          f"({duration / seconds['cpu']:.1f}x); {len(changes)} videos with a tag change")
    for path, moved in changes.items():
        print(f"  {Path(path).name}: {'; '.join(moved)}")
        failures.append(f"tags changed between {device} and cpu on {Path(path).name}")

    record["failures"] = failures
    args.json.write_text(json.dumps(record, indent=2) + "\n")
    print(f"{args.device} vs cpu: max score difference {score_diff:.2e}; record: {args.json}")
    for failure in failures:
        print(f"FAILED: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
