"""Scan speed against the decoding limit and the naive loop, in one run on one machine.

    python bench/scan_speed.py [--model PATH] [--out bench/results.json] [--long]

Generates its own corpus (ten 60 s 320x240 MPEG-4 AVI at 25 fps like UCF101, three 60 s 1280x720
H.264 at 30 fps; `--long` adds a 1-hour 720p H.264 video for peak memory), then measures with the
default model and default settings:

1. decode every frame (the old floor): the ffmpeg binary from imageio-ffmpeg, 2 threads, to a
   null sink;
2. decode what the windows need (the new floor): the scan's own decoders and decoding choice
   (`tagger.decode_plan`), one process per core as the scan runs them, one thread each, producing
   every frame the windows sample (scaled to the model's input, not cropped), no inference; it
   counts the frames decoded per frame used;
3. inference-only: the model on pre-decoded windows at the scan's batch size;
4. naive loop: per video, per window, decord reads the window's frames and onnxruntime runs that
   one window, sequentially (as in MMAction2's long-video demo), with a plain
   `onnxruntime.InferenceSession` as users create it; measured a second time with the tagger's
   session options (threads that sleep instead of spinning), which make the same loop faster;
5. `tagger scan` on a fresh database (a subprocess, start-up included).

Prints video-seconds per wall-second for each, the scan's speedup over the naive loop and over
decoding every frame, the efficiency (floor + inference-only) / scan for both floors, peak RSS of
the scan's process tree and the cold start, and writes the same numbers to JSON.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

CORPUS = [  # (name, seconds, width, height, fps, codec)
    *[(f"ucf_like_{i:02d}.avi", 60, 320, 240, 25, "mpeg4") for i in range(10)],
    *[(f"hd_{i}.mp4", 60, 1280, 720, 30, "libx264") for i in range(3)],
]
LONG = ("long_720p.mp4", 3600, 1280, 720, 30, "libx264")


def ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def make_video(folder: Path, name: str, seconds: int, width: int, height: int, fps: int, codec: str) -> Path:
    """A synthetic but codec-realistic video: moving test pattern plus noise (so frames differ).

    The 1-hour video uses x264's ultrafast preset when made by hand to save time; any 720p30 H.264
    file named long_720p.mp4 in the -long folder is used as it is."""
    path = folder / name
    if path.exists():
        return path
    partial = path.with_name("partial-" + name)  # renamed when complete: an interrupted run leaves no half file
    # Light noise: frames differ as in camera footage, at about UCF101's bitrate (noise=12 tripled it
    # and made decoding, not the model, the bottleneck, unlike real archives).
    source = f"testsrc2=size={width}x{height}:rate={fps},noise=alls=3:allf=t"
    extra = ["-preset", "veryfast", "-pix_fmt", "yuv420p"] if codec == "libx264" else ["-q:v", "5"]
    subprocess.run([ffmpeg(), "-v", "error", "-y", "-f", "lavfi", "-i", source, "-t", str(seconds),
                    "-c:v", codec, *extra, str(partial)], check=True)
    partial.rename(path)
    return path


class TreeRSS:
    """Samples the summed RSS of a process and its descendants every 50 ms; keeps the peak."""

    def __init__(self, pid: int):
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _tree(self) -> list[int]:
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as handle:
                        parent = int(handle.read().rsplit(")", 1)[1].split()[1])
                    children.setdefault(parent, []).append(int(entry))
                except (OSError, ValueError, IndexError):
                    continue
        tree, stack = [], [self.pid]
        while stack:
            pid = stack.pop()
            tree.append(pid)
            stack.extend(children.get(pid, []))
        return tree

    def _rss(self, pid: int) -> int:
        try:
            with open(f"/proc/{pid}/status") as handle:
                for line in handle:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, sum(self._rss(pid) for pid in self._tree()))
            time.sleep(0.05)

    def __enter__(self) -> TreeRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def decode_only(videos: list[Path]) -> float:
    began = time.perf_counter()
    for video in videos:
        subprocess.run([ffmpeg(), "-v", "error", "-threads", "2", "-i", str(video), "-f", "null", "-"], check=True)
    return time.perf_counter() - began


def decode_needed(model, videos: list[Path]) -> tuple[float, list[dict]]:
    """Wall seconds for the scan's decoders to produce every frame the scan's windows sample, and
    per video what that took (`_decode_needed`); worker start-up is not counted."""
    from tagger.config import default_workers

    c = model.contract
    jobs = [(str(video), c.resize, c.clip_len, c.frame_interval) for video in videos]
    with multiprocessing.get_context("spawn").Pool(default_workers()) as pool:
        pool.map(_warm_up, range(default_workers()), chunksize=1)
        began = time.perf_counter()
        rows = pool.map(_decode_needed, jobs, chunksize=1)
        return time.perf_counter() - began, rows


def _warm_up(_: int) -> None:
    """Import what decoding needs; long enough that every worker of the pool takes one."""
    import av  # noqa: F401
    import tagger.decode  # noqa: F401
    import tagger.windows  # noqa: F401

    time.sleep(0.3)


def _decode_needed(job: tuple[str, int, int, float]) -> dict:
    """One video decoded as the scan decodes it (`tagger.step.decode_windows`): the scan's decoder
    order, its window plan (keyframes standing in where the plan allows), its frames."""
    from tagger.decode import DECODERS, open_video
    from tagger.windows import plan_windows

    path, resize, clip_len, frame_interval = job
    began = time.perf_counter()
    source = open_video(path, resize, DECODERS, threads=1)
    plan = plan_windows(source.timestamps, source.info.duration, clip_len, frame_interval, keyframes=source.keyframes)
    for _ in source.read(plan.needed_frames):
        pass
    return {"video": Path(path).name, "decoder": source.name, "strategy": source.strategy,
            "frames": source.info.frames, "used": len(plan.needed_frames), "decoded": source.frames_decoded,
            "seconds": round(time.perf_counter() - began, 3)}


def planned_windows(model, videos: list[Path]) -> list[tuple[Path, np.ndarray]]:
    """Each video's window frame indices as the scan plans them."""
    from tagger.decode import open_video
    from tagger.windows import plan_windows

    c = model.contract
    plans = []
    for video in videos:
        source = open_video(str(video), c.resize, ("decord",))
        plan = plan_windows(source.timestamps, source.info.duration, c.clip_len, c.frame_interval)
        plans.append((video, plan.frame_indices))
    return plans


def inference_only(model, clips: np.ndarray, total_windows: int, batch_size: int) -> float:
    """Seconds to score `total_windows` pre-decoded windows in batches (cycling through `clips`)."""
    model.scores(clips[:batch_size])  # warm-up, as the scan's first batch also pays it
    began = time.perf_counter()
    done = 0
    while done < total_windows:
        size = min(batch_size, total_windows - done)
        model.scores(clips[:size])
        done += size
    return time.perf_counter() - began


def naive_loop(model, plans, plain_session: bool) -> float:
    """Per video, per window: decord reads the window's frames, onnxruntime scores that window alone.

    `plain_session`: score with `onnxruntime.InferenceSession(path)` and its default options, as the
    loop is usually written; otherwise with the tagger's session (`model.scores`).
    """
    import decord
    import onnxruntime as ort

    from tagger.decode import frame_crops, scaled_size

    c = model.contract
    if plain_session:
        session = ort.InferenceSession(str(model.path), providers=model.providers)  # the scan's device
        name = session.get_inputs()[0].name

        def score(clip: np.ndarray) -> None:
            session.run(None, {name: clip})
    else:
        score = model.scores
    score(np.zeros((1, c.input_frames, *c.size, 3), np.uint8))  # warm-up, as inference-only has
    began = time.perf_counter()
    for video, frame_indices in plans:
        probe = decord.VideoReader(str(video))
        height, width = probe[0].shape[:2]
        out_w, out_h = scaled_size(width, height, c.resize)
        reader = decord.VideoReader(str(video), width=out_w, height=out_h)
        for row in frame_indices:
            crops = frame_crops(reader.get_batch(list(row)).asnumpy(), c.size, c.crops)  # (T, C, H, W, 3)
            score(crops.reshape(1, -1, *crops.shape[2:]))  # (1, T*C, H, W, 3), as the scan feeds it
    return time.perf_counter() - began


def tagger_scan(folder: Path, db: Path, model_path: str | None, *extra: str) -> tuple[float, int, dict]:
    command = [sys.executable, "-m", "tagger.cli", "scan", str(folder), "--db", str(db), "--json", *extra]
    if model_path:
        command += ["--model", model_path]
    began = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    with TreeRSS(process.pid) as rss:
        stdout, _ = process.communicate()
    elapsed = time.perf_counter() - began
    if process.returncode != 0:
        raise SystemExit(f"tagger scan failed with exit code {process.returncode}")
    return elapsed, rss.peak, json.loads(stdout)


def cold_start(model_path: str | None) -> float:
    code = "import tagger.cli, tagger.pipeline; from tagger.model import load_model; load_model(%r)" % model_path
    began = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="ONNX model [default: the shipped default]")
    parser.add_argument("--corpus", type=Path, default=Path(tempfile.gettempdir()) / "tagger-bench-corpus")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("scan_speed.json"))
    parser.add_argument("--long", action="store_true", help="also a 1-hour 720p video (peak memory)")
    parser.add_argument("--batch-size", type=int, default=0, help="windows per inference call [default: the scan's]")
    args = parser.parse_args()

    from tagger.model import load_model

    args.corpus.mkdir(parents=True, exist_ok=True)
    print(f"corpus in {args.corpus}", flush=True)
    videos = [make_video(args.corpus, *spec) for spec in CORPUS]
    model = load_model(args.model)
    args.batch_size = args.batch_size or model.auto_batch_size()
    plans = planned_windows(model, videos)
    total_windows = sum(len(rows) for _, rows in plans)
    video_seconds = float(sum(spec[1] for spec in CORPUS))
    c = model.contract

    decode_s = decode_only(videos)
    needed_s, decoded = decode_needed(model, videos)
    from tagger.step import VideoJob, window_inputs

    sample = window_inputs(VideoJob.for_model(c, videos[0]))[: max(8, args.batch_size)]
    infer_s = inference_only(model, sample, total_windows, args.batch_size)
    naive_s = naive_loop(model, plans, plain_session=True)
    naive_tuned_s = naive_loop(model, plans, plain_session=False)
    with tempfile.TemporaryDirectory() as tmp:
        scan_s, peak, summary = tagger_scan(args.corpus, Path(tmp) / "bench.db", args.model)
    cold_s = cold_start(args.model)
    if summary["tagged"] != len(videos):
        raise SystemExit(f"tagger scan tagged {summary['tagged']} of {len(videos)} videos: its time means nothing")

    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "model": str(model.path), "window_s": c.window_seconds, "frames_per_window": c.clip_len,
        "crop": list(c.size), "crops": c.crops, "corpus_videos": len(videos), "corpus_video_s": video_seconds,
        "windows": total_windows, "batch_size": args.batch_size,
        "decode_only_s": decode_s, "decode_needed_s": needed_s, "inference_only_s": infer_s, "naive_loop_s": naive_s,
        "naive_loop_tagger_session_s": naive_tuned_s, "scan_s": scan_s,
        "speed_x": {name: video_seconds / seconds for name, seconds in
                    [("decode_only", decode_s), ("decode_needed", needed_s), ("inference_only", infer_s),
                     ("naive_loop", naive_s), ("naive_loop_tagger_session", naive_tuned_s), ("scan", scan_s)]},
        "scan_speedup_over_naive": naive_s / scan_s,
        "scan_speedup_over_naive_tagger_session": naive_tuned_s / scan_s,
        "scan_speedup_over_decode_only": decode_s / scan_s,
        "decode_needed_speedup_over_decode_only": decode_s / needed_s,
        "efficiency": (decode_s + infer_s) / scan_s,
        "efficiency_needed": (needed_s + infer_s) / scan_s,
        "frames_total": sum(row["frames"] for row in decoded), "frames_used": sum(row["used"] for row in decoded),
        "frames_decoded": sum(row["decoded"] or 0 for row in decoded),
        "decoded_per_used": sum(row["decoded"] or 0 for row in decoded) / sum(row["used"] for row in decoded),
        "decoding": decoded,
        "scan_peak_rss_mb": peak / 2**20, "cold_start_s": cold_s, "scan_tagged": summary["tagged"],
    }
    if args.long:
        long_dir = args.corpus.with_name(args.corpus.name + "-long")  # outside the corpus the scan walks
        long_dir.mkdir(exist_ok=True)
        make_video(long_dir, *LONG)
        with tempfile.TemporaryDirectory() as tmp:
            long_s, long_peak, _ = tagger_scan(long_dir, Path(tmp) / "long.db", args.model)
        results.update(long_video_s=LONG[1], long_scan_s=long_s, long_peak_rss_mb=long_peak / 2**20)

    print(f"\n{'stage':<40}{'seconds':>9}{'video-s per s':>15}")
    for name, seconds in [("decode every frame (ffmpeg, 2 threads)", decode_s), ("decode what windows need", needed_s),
                          ("inference-only", infer_s), ("naive loop", naive_s),
                          ("naive loop, tagger session options", naive_tuned_s), ("tagger scan", scan_s)]:
        print(f"{name:<40}{seconds:>9.2f}{video_seconds / seconds:>15.1f}")
    print(f"\nframes: {results['frames_total']} in the corpus, {results['frames_used']} used by windows, "
          f"{results['frames_decoded']} decoded: {results['decoded_per_used']:.2f} decoded per frame used")
    for strategy in sorted({row["strategy"] for row in decoded}, key=str):
        rows = [row for row in decoded if row["strategy"] == strategy]
        print(f"  {strategy}: {len(rows)} videos, {sum(r['decoded'] or 0 for r in rows)} frames decoded for "
              f"{sum(r['used'] for r in rows)} used, of {sum(r['frames'] for r in rows)}, "
              f"{sum(r['seconds'] for r in rows):.2f} s of one core")
    print(f"decoding what windows need is {results['decode_needed_speedup_over_decode_only']:.2f}x faster than "
          f"decoding every frame")
    print(f"\nscan speedup over decoding every frame: {results['scan_speedup_over_decode_only']:.2f}x")
    print(f"scan speedup over the naive loop: {results['scan_speedup_over_naive']:.2f}x "
          f"({results['scan_speedup_over_naive_tagger_session']:.2f}x over it with the tagger's session options)")
    print(f"efficiency (decode every frame + inference-only) / scan: {results['efficiency']:.2f}; "
          f"(decode what windows need + inference-only) / scan: {results['efficiency_needed']:.2f}")
    print(f"scan peak RSS (process tree): {results['scan_peak_rss_mb']:.0f} MB; cold start {cold_s:.2f} s")
    if args.long:
        print(f"1-hour 720p: scan {results['long_scan_s']:.0f} s, peak RSS {results['long_peak_rss_mb']:.0f} MB")
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"results written to {args.out}")


if __name__ == "__main__":
    main()
