"""What stored window features cost: bytes per video-hour, measured on a real scan.

    python bench/feature_storage.py [--clips ../shared/data/clips] [--dims 3,274] [--model PATH]

Scans the folder twice per model into new SQLite files, with `--features` and `--no-features`,
vision only, and reports the difference in database size per hour of video scanned, beside the
formula (windows per hour x dim x 2 bytes of float16), and the feature bytes themselves (a small
model's difference hides under SQLite's 4 KB pages). The models are generated: the colour model's
geometry (1 s windows of 4 frames) with a `features` output of `dim` values, a fixed projection of
each window's mean colour, so any size of the default model's can be measured before that model
exists; `--model` measures an exported model instead. The feature index `tagger similar` keeps
(`tagger.feature_index`) costs dim x 4 + 28 bytes more per window, outside the database.

Measurements, not a test; results are printed and written to bench/feature_storage.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def write_model(path: Path, dim: int, space: str | None = None) -> Path:
    """A video model scoring Red/Green/Blue as the clip's mean colour, with `dim` features: the mean
    colour through a fixed random projection (seeded), as float32 [N, dim], of feature space `space`
    (default: storage-bench-DIM)."""
    import onnx
    from onnx import TensorProto, helper

    from tagger.contract import ModelContract

    projection = np.random.default_rng(dim).standard_normal((3, dim)).astype(np.float32)
    nodes = [
        helper.make_node("Cast", ["frames"], ["as_float"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["as_float", "axes"], ["mean"], keepdims=0),
        helper.make_node("Div", ["mean", "scale"], ["probs"]),
        helper.make_node("MatMul", ["probs", "projection"], ["features"]),
    ]
    graph = helper.make_graph(
        nodes, "colour_features",
        [helper.make_tensor_value_info("frames", TensorProto.UINT8, ["N", 4, 32, 32, 3])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 3]),
         helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", dim])],
        initializer=[helper.make_tensor("axes", TensorProto.INT64, [3], [1, 2, 3]),
                     helper.make_tensor("scale", TensorProto.FLOAT, [], [255.0]),
                     helper.make_tensor("projection", TensorProto.FLOAT, [3, dim], projection.ravel())])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    contract = ModelContract(labels=("Red", "Green", "Blue"), clip_len=4, size=(32, 32), resize=32, fps=4.0,
                             thresholds={"Red": 0.5, "Green": 0.5, "Blue": 0.5}, output="probs",
                             arch="storage-bench", version="1",
                             extra={"features": {"dim": dim, "space": space or f"storage-bench-{dim}"}})
    for key, value in contract.to_metadata().items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return path


def scan(clips: Path, model: Path, db: Path, features: bool) -> dict:
    """`tagger scan` in a subprocess; its JSON summary and the database's size in bytes."""
    done = subprocess.run(
        [sys.executable, "-m", "tagger.cli", "scan", str(clips), "--db", str(db), "--model", str(model),
         "--streams", "video", "--features" if features else "--no-features", "--json"],
        capture_output=True, text=True, env={**os.environ, "TAGGER_HEADS": str(db.parent / "no-heads")})
    if done.returncode not in (0, 3):
        raise SystemExit(done.stderr)
    import sqlite3

    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("VACUUM")
        windows, payload = conn.execute("select count(*), coalesce(sum(length(features)), 0) from windows").fetchone()
    return {**json.loads(done.stdout), "bytes": db.stat().st_size, "windows": windows, "payload": payload}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=Path, default=ROOT.parent / "shared" / "data" / "clips")
    parser.add_argument("--dims", default="3,274")
    parser.add_argument("--model", type=Path, help="an exported model with tagger.features, instead of generated ones")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="feature-storage-") as work:
        models = [args.model] if args.model else [write_model(Path(work) / f"dim{d}.onnx", int(d))
                                                  for d in args.dims.split(",")]
        for model in models:
            with_f = scan(args.clips, model, Path(work) / f"{model.stem}-with.db", True)
            without = scan(args.clips, model, Path(work) / f"{model.stem}-without.db", False)
            hours = with_f["video_seconds"] / 3600
            dim = json.loads(_metadata(model)["tagger.features"])["dim"]
            per_window = (with_f["bytes"] - without["bytes"]) / with_f["windows"]
            row = {"model": model.name, "dim": dim, "videos": with_f["tagged"], "video_hours": round(hours, 4),
                   "windows": with_f["windows"], "windows_per_hour": round(with_f["windows"] / hours, 1),
                   "db_bytes_with": with_f["bytes"], "db_bytes_without": without["bytes"],
                   "bytes_per_window": round(per_window, 1),
                   "feature_bytes_per_window": round(with_f["payload"] / with_f["windows"], 1),
                   "bytes_per_video_hour": round((with_f["bytes"] - without["bytes"]) / hours),
                   "formula_bytes_per_video_hour": round(with_f["windows"] / hours * dim * 2),
                   "index_bytes_per_video_hour": round(with_f["windows"] / hours * (dim * 4 + 28))}
            print(json.dumps(row), flush=True)
            results.append(row)
    Path(__file__).with_name("feature_storage.json").write_text(json.dumps(results, indent=1) + "\n")


def _metadata(model: Path) -> dict:
    import onnxruntime

    return dict(onnxruntime.InferenceSession(str(model)).get_modelmeta().custom_metadata_map)


if __name__ == "__main__":
    main()
