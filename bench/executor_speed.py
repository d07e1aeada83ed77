"""The Ray executor against the local one, on the benchmark corpus, on this machine.

    python bench/executor_speed.py [--model PATH] [--rounds 2] [--out bench/executor_speed.json]

Uses the corpus of `bench/scan_speed.py` (ten 60 s 320x240 MPEG-4 AVI, three 60 s 720p H.264).
Starts a Ray head on this machine (`ray start --head`, timed apart: a cluster runs before and after
scans), then alternates `tagger scan` with the local executor and with `--executor ray
--ray-address auto`, each a subprocess on a fresh SQLite file, `--rounds` times, and prints the
fastest of each and the Ray overhead (ray / local - 1). Both must store the same segments.

It also measures the per-video step's two stages on one core, for planning a cluster: decoding
(`tagger.step.window_inputs`: the frames a scan samples, resized and cropped) in video-seconds per
core-second, and inference in windows per second at the scan's batch size.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scan_speed import CORPUS, inference_only, make_video, tagger_scan  # noqa: E402


def segments(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return sorted(conn.execute("select v.path, s.label, s.start, s.end, round(s.score, 5), s.source "
                                   "from segments s join videos v on v.id = s.video_id").fetchall())


def ray_cli(*args: str) -> None:
    ray = Path(sys.executable).with_name("ray")
    subprocess.run([str(ray), *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def decode_stage(model, videos: list[Path]) -> tuple[float, float]:
    """(video seconds, seconds) to produce every window input of `videos` on one core."""
    from tagger.step import VideoJob, window_inputs

    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    began = time.perf_counter()
    for video in videos:
        window_inputs(VideoJob.for_model(model.contract, video, threads=1))
    spent = time.perf_counter() - began
    os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    return float(sum(spec[1] for spec in CORPUS if spec[0] in {v.name for v in videos})), spent


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

    decoded_s, decode_s = decode_stage(model, videos[:2] + videos[-1:])
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
                    found[name] = segments(db)
                times[name].append(seconds)
                peaks[name] = max(peaks[name], peak)
                print(f"{name:>5} scan: {seconds:6.2f} s", flush=True)
    finally:
        ray_cli("stop", "--force")
    if found["local"] != found["ray"]:
        raise SystemExit("the executors stored different segments")
    local_s, ray_s = min(times["local"]), min(times["ray"])
    results = {
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores",
        "model": str(model.path), "corpus_videos": len(videos), "corpus_video_s": video_seconds,
        "local_scan_s": times["local"], "ray_scan_s": times["ray"], "ray_overhead": ray_s / local_s - 1,
        "local_peak_rss_mb": peaks["local"] / 2**20, "ray_scan_peak_rss_mb": peaks["ray"] / 2**20,
        "ray_start_s": ray_start_s, "same_segments": True, "segments": len(found["local"]),
        "decode_video_s_per_core_s": decoded_s / decode_s,
        "inference_windows_per_s_cpu": total / infer_s, "batch_size": batch,
        "windows_per_video_s": windows_per_video_second,
    }
    print(f"\nlocal executor: {local_s:.2f} s ({video_seconds / local_s:.1f}x real time), "
          f"peak RSS {results['local_peak_rss_mb']:.0f} MB")
    print(f"ray executor:   {ray_s:.2f} s ({video_seconds / ray_s:.1f}x real time), scan process tree "
          f"{results['ray_scan_peak_rss_mb']:.0f} MB (the cluster's own processes not counted)")
    print(f"ray overhead: {100 * results['ray_overhead']:+.1f}% (ray start --head took {ray_start_s:.1f} s, once)")
    print(f"same segments from both: {len(found['local'])} segments")
    print(f"per stage on one core: decoding {results['decode_video_s_per_core_s']:.1f} video-s per s; "
          f"inference {results['inference_windows_per_s_cpu']:.1f} windows per s "
          f"({windows_per_video_second:.2f} windows per video-s)")
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"results written to {args.out}")


if __name__ == "__main__":
    main()
