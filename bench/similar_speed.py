"""How fast `tagger similar` answers, and in how much memory, at 10^4, 10^5 and 10^6 stored windows.

    python bench/similar_speed.py [--sizes 10000,100000,1000000] [--dim 274] [--keep DIR] [--db URL]

For each size, a new store is generated through `tagger.sink.Sink.save_video` (nothing decoded):
videos of 900 windows (an hour of 4 s windows), each window's features float16 of `--dim` values
(274: the size the next default model stores) drawn around 64 random "scenes" so that neighbours
exist. Then, each in a fresh process:

- the first query, which builds the feature index in the cache folder (one pass over the stored
  features);
- 5 more queries on the built index: the median time, the peak memory the query itself allocates
  (tracemalloc: numpy's buffers) and the process's peak resident set afterwards (which counts the
  pages of the memory-mapped index it touched);
- after one more video is stored, the query that refreshes the index incrementally;
- `tagger similar` as a user runs it, start-up included;
- `tagger learn` of a label from 3 two-minute spans (90 windows) against the default sample of
  5,000 negatives, start-up included (the fits, the held-out check and scoring every stored window).

`--db postgresql://...` runs the same against a PostgreSQL server (a new database per size).
Measurements, not a test; results are printed and written to bench/similar_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tagger.contract import ModelContract
from tagger.database import Database
from tagger.schema import VideoResult
from tagger.sink import Sink

WINDOWS_PER_VIDEO = 900  # an hour of 4 s windows
SCENES = 64
LABELS = ("A", "B", "C")


def _contract(dim: int) -> ModelContract:
    return ModelContract(labels=LABELS, clip_len=4, size=(224, 224), resize=224, fps=1.0, thresholds={},
                         output="probs", arch="bench", version="1",
                         extra={"features": {"dim": dim, "space": f"bench-{dim}"}})


def _video(rng: np.random.Generator, scenes: np.ndarray, index: int, windows: int, model_id: int) -> VideoResult:
    """One video of `windows` 4 s windows in 2-minute scenes, each window near its scene's centre."""
    starts = np.arange(windows) * 4.0
    scene = rng.integers(0, SCENES, size=windows // 30 + 1).repeat(30)[:windows]
    features = (scenes[scene] + 0.3 * rng.standard_normal((windows, scenes.shape[1]))).astype(np.float16)
    return VideoResult(f"/archive/reel{index // 100:03d}/clip{index:05d}.mp4", 1000, index, None, "ok",
                       decoder="pyav", duration=windows * 4.0, fps=25.0, frames=windows * 100, width=1280,
                       height=720, window_starts=starts, window_ends=starts + 4.0,
                       window_scores={model_id: rng.random((windows, len(LABELS)), np.float32)},
                       window_features={model_id: features})


def generate_store(target: str, windows: int, dim: int, seed: int = 0) -> tuple[float, int]:
    """Fill `target` with `windows` featured windows; returns (seconds, videos)."""
    rng = np.random.default_rng(seed)
    scenes = rng.standard_normal((SCENES, dim))
    database = Database(target)
    sink = Sink(database)
    contract = _contract(dim)
    model_id = sink.register_model("b" * 64, "bench", contract.labels, contract.to_metadata())
    began = time.perf_counter()
    videos = 0
    for index, first in enumerate(range(0, windows, WINDOWS_PER_VIDEO)):
        sink.save_video(_video(rng, scenes, index, min(WINDOWS_PER_VIDEO, windows - first), model_id), model_id)
        videos += 1
    database.close()
    return time.perf_counter() - began, videos


QUERY = r"""
import json, statistics, sys, time, tracemalloc, resource
from tagger.similar import SimilarQuery, similar_windows
target, mode = sys.argv[1], sys.argv[2]
ask = SimilarQuery("/archive/reel000/clip00000.mp4", 1234.0, top=10)
if mode == "cold":
    began = time.perf_counter(); hits = similar_windows(target, ask); print(json.dumps({"s": time.perf_counter() - began}))
    sys.exit()
similar_windows(target, ask)  # imports and the first touch of the index's pages
times, peaks = [], []
for at in (100.0, 900.0, 1800.0, 2600.0, 3500.0):
    tracemalloc.start()
    began = time.perf_counter()
    hits = similar_windows(target, SimilarQuery("/archive/reel000/clip00000.mp4", at, top=10))
    times.append(time.perf_counter() - began)
    peaks.append(tracemalloc.get_traced_memory()[1])
    tracemalloc.stop()
print(json.dumps({"median_s": statistics.median(times), "max_s": max(times), "allocated_mb": max(peaks) / 1e6,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "top": hits[0]}))
"""


def _query(target: str, mode: str, env: dict) -> dict:
    done = subprocess.run([sys.executable, "-c", QUERY, target, mode], env=env, check=True, capture_output=True,
                          text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _learn_seconds(work: Path, target: str, env: dict, dim: int) -> float:
    """`tagger learn` in a subprocess, with a generated model of the store's feature space."""
    sys.path.insert(0, str(Path(__file__).parent))
    from feature_storage import write_model

    model = write_model(work / f"bench{dim}.onnx", dim, f"bench-{dim}")
    spans = [arg for i in range(3) for arg in ("--positive", f"/archive/reel000/clip{i:05d}.mp4@0-120")]
    began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tagger.cli", "learn", "SceneA", *spans, "--model", str(model), "--db",
                    target, "--heads", str(work / "heads")], env=env, check=True, capture_output=True)
    return time.perf_counter() - began


def _postgres_database(server: str, name: str) -> str:
    import sqlalchemy as sa

    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    admin.dispose()
    return sa.engine.make_url(server).set(database=name).render_as_string(hide_password=False)


def measure(work: Path, windows: int, dim: int, server: str | None) -> dict:
    target = _postgres_database(server, f"similar_bench_{windows}") if server else str(work / f"w{windows}.db")
    env = {**os.environ, "TAGGER_CACHE": str(work / f"cache{windows}")}
    write_s, videos = generate_store(target, windows, dim)
    db_mb = Path(target).stat().st_size / 1e6 if not server else None
    print(f"{windows} windows in {videos} videos: stored in {write_s:.1f} s", flush=True)
    cold = _query(target, "cold", env)["s"]
    warm = _query(target, "warm", env)
    cache_mb = sum(f.stat().st_size for f in Path(env["TAGGER_CACHE"]).rglob("*") if f.is_file()) / 1e6
    rng = np.random.default_rng(1)
    database = Database(target)
    sink = Sink(database)
    model_id = sink.register_model("b" * 64, "bench", LABELS, _contract(dim).to_metadata())
    sink.save_video(_video(rng, rng.standard_normal((SCENES, dim)), 99_999, WINDOWS_PER_VIDEO, model_id), model_id)
    database.close()
    refreshed = _query(target, "cold", env)["s"]
    began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tagger.cli", "similar", "/archive/reel000/clip00000.mp4", "--at", "20:34",
                    "--db", target, "--format", "csv"], env=env, check=True, capture_output=True)
    cli_s = time.perf_counter() - began
    learn_s = _learn_seconds(work, target, env, dim)
    result = {"windows": windows, "videos": videos, "dim": dim, "write_s": round(write_s, 1),
              "db_mb": round(db_mb, 1) if db_mb else None, "cache_mb": round(cache_mb, 1),
              "first_query_s": round(cold, 3), "query_median_s": round(warm["median_s"], 4),
              "query_max_s": round(warm["max_s"], 4), "query_allocated_mb": round(warm["allocated_mb"], 1),
              "peak_rss_mb": round(warm["peak_rss_mb"], 1), "query_after_one_new_video_s": round(refreshed, 3),
              "cli_s": round(cli_s, 2), "learn_cli_s": round(learn_s, 1)}
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--dim", type=int, default=274)
    parser.add_argument("--db", help="a PostgreSQL server URL (a database per size is created on it)")
    parser.add_argument("--keep", type=Path, help="generate here and keep the stores and caches")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="similar-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    results = [measure(work, int(size), args.dim, args.db) for size in args.sizes.split(",")]
    name = "similar_speed_postgres.json" if args.db else "similar_speed.json"
    Path(__file__).with_name(name).write_text(json.dumps(results, indent=1) + "\n")
    print(f"{'windows':>9} {'first query':>12} {'query':>8} {'allocated':>10} {'peak RSS':>9} {'+1 video':>9} {'CLI':>6} "
          f"{'learn':>6}")
    for r in results:
        print(f"{r['windows']:>9} {r['first_query_s']:>11.2f}s {r['query_median_s'] * 1000:>6.0f}ms "
              f"{r['query_allocated_mb']:>8.1f}MB {r['peak_rss_mb']:>7.0f}MB {r['query_after_one_new_video_s']:>8.2f}s "
              f"{r['cli_s']:>5.1f}s {r['learn_cli_s']:>5.1f}s")
    if not args.keep:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
