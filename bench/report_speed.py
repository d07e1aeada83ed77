"""How fast `tagger report` is on a 10,000-video store, and how fast its page becomes interactive.

    python bench/report_speed.py [--videos 10000] [--keep DIR]

Generates a store directly through `tagger.sink.Sink.save_video` (no decoding: synthetic
videos with 0-12 segments over 8 labels, evidence mixed, 2% failed), then:

- times `tagger report --no-thumbnails` in a subprocess, start-up included (target: < 30 s).
  The videos do not exist, so no thumbnails: this measures reading the store and writing the page;
- loads the page in headless chromium (Debian's chromium + chromium-driver through selenium) and
  reads the time from navigation start to the moment the page's script has drawn it and set
  `data-ready` (target: < 2 s), then the time one label filter takes, layout included.

Measurements, not a test; results are printed and written to bench/report_speed.json.
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

from tagger.segments import Segment
from tagger.schema import VideoResult
from tagger.database import Database
from tagger.sink import Sink

LABELS = ("Drumming", "PlayingCello", "PlayingDaf", "PlayingFlute", "PlayingGuitar", "PlayingPiano",
          "PlayingSitar", "PlayingViolin")
SOURCES = ("video", "audio", "both")


def generate_store(db: Path, count: int, seed: int = 0) -> int:
    """Fill `db` with `count` synthetic videos; returns the number of segments stored."""
    rng = np.random.default_rng(seed)
    database = Database(str(db))
    store = Sink(database)
    model_id = store.register_model("0" * 64, "bench-model", LABELS, {"tagger.kind": "video"})
    total = 0
    for i in range(count):
        path = f"/archive/{1990 + i % 30}/reel {i // 100:03d}/clip_{i:05d} <{i % 7}>.mp4"
        if rng.random() < 0.02:
            store.save_video(VideoResult(path, 1000, i, None, "failed", error="pyav: Invalid data found"), model_id)
            continue
        duration = float(rng.uniform(20, 1800))
        segments = []
        for _ in range(int(rng.integers(0, 13))):
            start = float(rng.uniform(0, duration - 5))
            end = min(duration, start + float(rng.uniform(2, 120)))
            score = float(rng.uniform(0.5, 1.0))
            segments.append(Segment(str(rng.choice(LABELS)), round(start, 3), round(end, 3), score,
                                    min(1.0, score + 0.05), str(rng.choice(SOURCES, p=(0.6, 0.15, 0.25)))))
        total += len(segments)
        fps = float(rng.choice((25.0, 30000 / 1001, 30.0)))
        store.save_video(VideoResult(path, 1000, i, None, "ok", decoder="pyav", duration=duration, fps=fps,
                                     frames=int(duration * fps), width=1280, height=720, segments=segments), model_id)
    database.close()
    return total


def page_timings(page: Path) -> dict:
    """Navigation start to `data-ready`, and one label filter, in headless chromium (milliseconds)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1200,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=shutil.which("chromedriver")))
    try:
        runs = []
        for _ in range(3):  # the first load includes chromium warming up; report each
            driver.get(page.as_uri())
            WebDriverWait(driver, 60).until(lambda d: d.execute_script("return document.body.dataset.ready") == "1")
            runs.append(driver.execute_script(
                "const nav = performance.getEntriesByType('navigation')[0];"
                "return {ready_ms: window.reportReadyMs, dom_content_loaded_ms: nav.domContentLoadedEventEnd}"))
        filtered = driver.execute_script(
            "const select = document.getElementById('f-label'); const t0 = performance.now();"
            "select.value = '4'; select.dispatchEvent(new Event('change')); document.body.offsetHeight;"
            "return {filter_ms: performance.now() - t0, count: document.getElementById('count').textContent}")
    finally:
        driver.quit()
    return {"loads": runs, **filtered}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=10_000)
    parser.add_argument("--keep", type=Path, help="generate here and keep the store and report")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="report-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    db, out = work / "bench.db", work / "report"
    for stale in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        stale.unlink(missing_ok=True)
    began = time.perf_counter()
    segments = generate_store(db, args.videos)
    generated = time.perf_counter() - began
    print(f"store: {args.videos} videos, {segments} segments, generated in {generated:.1f} s", flush=True)

    began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tagger.cli", "report", "--db", str(db), "-o", str(out), "--no-thumbnails"],
                   check=True)
    report_s = time.perf_counter() - began
    size_mb = (out / "index.html").stat().st_size / 1e6
    print(f"tagger report (no thumbnails, start-up included): {report_s:.2f} s (target < 30 s); "
          f"index.html {size_mb:.1f} MB", flush=True)

    timings = page_timings(out / "index.html")
    for n, run in enumerate(timings["loads"], 1):
        print(f"page load {n}: interactive (data-ready) at {run['ready_ms']:.0f} ms after navigation start "
              f"(target < 2000 ms); DOMContentLoaded at {run['dom_content_loaded_ms']:.0f} ms")
    print(f"label filter: {timings['filter_ms']:.0f} ms ({timings['count']})")
    results = {"videos": args.videos, "segments": segments, "report_s": round(report_s, 2),
               "page_mb": round(size_mb, 2), "thumbnails": 0, **timings}
    Path(__file__).with_name("report_speed.json").write_text(json.dumps(results, indent=1) + "\n")
    if not args.keep:
        shutil.rmtree(work)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
