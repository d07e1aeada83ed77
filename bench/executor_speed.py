"""The Ray executor against the local one, on the benchmark corpus, on this machine.

    python bench/executor_speed.py [--model PATH] [--rounds 2] [--out bench/executor_speed.json]

Uses the corpus of `bench/scan_speed.py` (ten 60 s 320x240 MPEG-4 AVI, three 60 s 720p H.264).
Starts a Ray head on this machine (`ray start --head`, timed apart: a cluster runs before and after
scans), then alternates `tagger scan` with the local executor and with `--executor ray
--ray-address auto`, each a subprocess on a fresh SQLite file, `--rounds` times, and prints the
fastest of each and the Ray overhead (ray / local - 1).

Both must store the same segments and window scores (within 1e-4: the local executor batches
windows across videos, an actor within one). It also measures the per-video step's two stages on
one core, for planning a cluster: decoding (`tagger.step.window_inputs`: the frames a scan
samples, resized and cropped) in video-seconds per core-second, for a 320x240 and a 720p video,
and inference in windows per second at the scan's batch size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scan_speed import CORPUS, inference_only, make_video, tagger_scan  # noqa: E402


def stored(db: Path) -> tuple[list[tuple], dict[tuple, np.ndarray]]:
    """(segments, window scores by (path, model, start)) of a scan."""
    with sqlite3.connect(db) as conn:
        found = sorted(conn.execute("select v.path, s.label, s.start, s.end, s.source "
                                    "from segments s join videos v on v.id = s.video_id").fetchall())
        windows = {(path, model, start): np.frombuffer(scores, "<f4") for path, model, start, scores in conn.execute(
            "select v.path, w.model_id, w.start, w.scores from windows w join videos v on v.id = w.video_id")}
    return found, windows


def largest_difference(a: dict, b: dict) -> float:
    """The largest difference between two scans' window scores; inf if their windows differ."""
    if a.keys() != b.keys():
        return float("inf")
    return max(float(np.abs(a[key] - b[key]).max()) for key in a)


def ray_cli(*args: str) -> None:
    ray = Path(sys.executable).with_name("ray")
    subprocess.run([str(ray), *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def decode_rate(model, video: Path, seconds: float) -> float:
    """Video-seconds per second, on one core, to produce every window input of `video`."""
    from tagger.step import VideoJob, window_inputs

    cores = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cores)})
    began = time.perf_counter()
    window_inputs(VideoJob.for_model(model.contract, video, threads=1))
    spent = time.perf_counter() - began
    os.sched_setaffinity(0, cores)
    return seconds / spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="ONNX model [default: the shipped default]")
    parser.add_argument("--corpus", type=Path, default=Path(tempfile.gettempdir()) / "tagger-bench-corpus")
    parser.add_argument("--rounds", type=int, default=2, help="scans per executor (the fastest counts)")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("executor_speed.json"))
    args = parser.parse_args()

    from tagger.model import load_model
    from tagger.step import VideoJob, window_inputs

    args.corpus.mkdir(parents=True, exist_ok=True)
    videos = [make_video(args.corpus, *spec) for spec in CORPUS]
    video_seconds = float(sum(spec[1] for spec in CORPUS))
    model = load_model(args.model, "cpu", 1)
    batch = model.auto_batch_size()
    windows_per_video_second = len(window_inputs(VideoJob.for_model(model.contract, videos[0]))) / CORPUS[0][1]

    decode_sd = decode_rate(model, videos[0], CORPUS[0][1])  # 320x240 MPEG-4, like UCF101
    decode_hd = decode_rate(model, videos[-1], CORPUS[-1][1])  # 1280x720 H.264
    sample = window_inputs(VideoJob.for_model(model.contract, videos[0]))[:batch]
    total = 200
    infer_s = inference_only(model, sample, total, batch)

    began = time.perf_counter()
    ray_cli("start", "--head", "--num-cpus", str(len(os.sched_getaffinity(0))), "--include-dashboard=false",
            "--disable-usage-stats")
    ray_start_s = time.perf_counter() - began
    times: dict[str, list[float]] = {"local": [], "ray": []}
    peaks: dict[str, int] = {"local": 0, "ray": 0}
    found: dict[str, list] = {}
    try:
        for _ in range(args.rounds):
            for name, extra in [("local", ()), ("ray", ("--executor", "ray", "--ray-address", "auto"))]:
                with tempfile.TemporaryDirectory() as tmp:
                    db = Path(tmp) / f"{name}.db"
                    seconds, peak, summary = tagger_scan(args.corpus, db, args.model, *extra)
                    if summary["tagged"] != len(videos):
                        raise SystemExit(f"{name}: tagged {summary['tagged']} of {len(videos)} videos")
                    found[name] = stored(db)
                times[name].append(seconds)
                peaks[name] = max(peaks[name], peak)
                print(f"{name:>5} scan: {seconds:6.2f} s", flush=True)
    finally:
        ray_cli("stop", "--force")
    difference = largest_difference(found["local"][1], found["ray"][1])
    if found["local"][0] != found["ray"][0] or difference > 1e-4:
        raise SystemExit(f"the executors stored different tags (window scores differ by up to {difference})")
    local_s, ray_s = min(times["local"]), min(times["ray"])
    results = {
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores",
        "model": str(model.path), "corpus_videos": len(videos), "corpus_video_s": video_seconds,
        "local_scan_s": times["local"], "ray_scan_s": times["ray"], "ray_overhead": ray_s / local_s - 1,
        "local_peak_rss_mb": peaks["local"] / 2**20, "ray_scan_peak_rss_mb": peaks["ray"] / 2**20,
        "ray_start_s": ray_start_s, "same_segments": True, "segments": len(found["local"][0]),
        "windows_stored": len(found["local"][1]), "window_score_max_difference": difference,
        "decode_video_s_per_core_s_320x240": decode_sd, "decode_video_s_per_core_s_720p": decode_hd,
        "inference_windows_per_s_cpu": total / infer_s, "batch_size": batch,
        "windows_per_video_s": windows_per_video_second,
    }
    print(f"\nlocal executor: {local_s:.2f} s ({video_seconds / local_s:.1f}x real time), "
          f"peak RSS {results['local_peak_rss_mb']:.0f} MB")
    print(f"ray executor:   {ray_s:.2f} s ({video_seconds / ray_s:.1f}x real time), scan process tree "
          f"{results['ray_scan_peak_rss_mb']:.0f} MB (the cluster's own processes not counted)")
    print(f"ray overhead: {100 * results['ray_overhead']:+.1f}% (ray start --head took {ray_start_s:.1f} s, once)")
    print(f"same tags from both: {len(found['local'][0])} segments, {len(found['local'][1])} window rows, "
          f"window scores within {difference:.1e}")
    print(f"per stage on one core: decoding {decode_sd:.1f} video-s per s (320x240), {decode_hd:.1f} (720p); "
          f"inference {results['inference_windows_per_s_cpu']:.1f} windows per s "
          f"({windows_per_video_second:.2f} windows per video-s)")
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"results written to {args.out}")


if __name__ == "__main__":
    main()
