"""What the default model's build measures of the file it wrote: how fast a scan runs with it.

`training/build_default.py` calls `scan_speed` after export: bench/scan_speed.py in a subprocess,
the tagger's own scan, so what is measured is what a user runs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path



ROOT = Path(__file__).resolve().parents[1]


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
