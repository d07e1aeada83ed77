"""What the default model's build writes and ships: the models' metadata, and the gate before exports/.

`training/build_default.py` calls `vision_metadata` / `audio_metadata` for the graphs it assembles,
and `ship` runs the gate (bench/eval_default.py on the test split against the previous default)
and copies the models into exports/ only when no label with 3 or more held-out videos gets worse.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from tagger.contract import ModelContract
from tagger.model import DEFAULT_AUDIO_MODEL_NAME, file_sha256
from training.frame_net import STRIDE, Projection
from training.musicnn_map import MTT_TAGS

ROOT = Path(__file__).resolve().parents[1]


def feature_space(parts_graph: Path, projection: Projection, config) -> str:
    """The id of the vision features' space: the backbone graph, the projection and the sampling."""
    digest = hashlib.sha256(parts_graph.read_bytes())
    digest.update(projection.mean.tobytes() + projection.matrix.tobytes())
    digest.update(f"{config.clip_len}:{config.fps}:{STRIDE}".encode())
    return "lite0-v3-" + digest.hexdigest()[:16]


def vision_metadata(config, thresholds: dict, support: float, space: str, weights: np.ndarray,
                    bias: np.ndarray, train: dict) -> dict[str, str]:
    from tagger.heads import encode_matrix
    from training.build_default import LEFT_OUT, TAGS

    contract = ModelContract(
        labels=TAGS, clip_len=config.clip_len, size=(224, 224), resize=224, fps=config.fps, whole_frame=STRIDE,
        thresholds=thresholds, output="probs", arch="lite0-wholeframe-linear", version=config.version, train=train,
        extra={"features": {"dim": int(weights.shape[1]), "space": space},
               "head": {"weights": encode_matrix(weights), "bias": [float(b) for b in bias], "activation": "sigmoid"},
               "left_out": LEFT_OUT, "fusion_support": support, "audio_model": "default_audio.onnx"})
    contract.validate("default model")
    return contract.to_metadata()


def audio_metadata(config, thresholds: dict, weights: np.ndarray, bias: np.ndarray,
                   train: dict) -> dict[str, str]:
    from tagger.heads import encode_matrix
    from training.build_default import contracts

    _, audio = contracts({}, thresholds, 1.0)
    audio = dataclasses.replace(audio, arch="musicnn-linear", version=config.version, train=train, extra={
        "features": {"dim": int(weights.shape[1]), "space": "musicnn-mtt-hidden-logits-v1"},
        "head": {"weights": encode_matrix(np.concatenate([weights, np.zeros((len(MTT_TAGS), weights.shape[1]),
                                                                             np.float32)])),
                 "bias": [float(b) for b in bias] + [0.0] * len(MTT_TAGS), "activation": "sigmoid",
                 "note": "the raw mtt: columns are sigmoid(mtt logit), not this matrix"}})
    audio.validate("default audio model")
    return audio.to_metadata()


def ship(out_dir: Path, previous: tuple[Path, Path], target: Path = ROOT / "exports", echo=print,
         manifest: Path = ROOT / "training" / "corpus_videos.tsv", videos_root: Path = Path("/work/videocorpus")) -> bool:
    """The gate (bench/eval_default.py on the test split's real videos, against `previous` = (vision,
    sound)): when no label with 3 or more held-out videos gets worse, copy the models into `target`,
    measure the scan there (bench/scan_speed.py), and write a card with the gate's per-label tables
    side by side, the scan speed and the files' sha256. Returns whether it passed; a gate whose scans
    measured nothing (a video failed or a model tagged none) is refused and ships nothing.

    The candidate's sound model is OUT/default_audio.onnx when the build wrote one, else the shipped
    musicnn (what `tagger scan` pairs with a default that names no sound model)."""
    import importlib.util
    import shutil

    from training.model_checks import scan_speed

    spec = importlib.util.spec_from_file_location("eval_default", ROOT / "bench" / "eval_default.py")
    gate = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = gate  # its dataclasses look their module up there
    spec.loader.exec_module(gate)
    own_sound = (out_dir / "default_audio.onnx").is_file()
    sound = out_dir / "default_audio.onnx" if own_sound else target / DEFAULT_AUDIO_MODEL_NAME
    videos = gate.labelled_videos(manifest, videos_root, "test")
    try:
        new = gate.label_table(videos, gate.scan_tags("candidate", out_dir / "default.onnx", sound, videos))
        old = gate.label_table(videos, gate.scan_tags("previous", *previous, videos))
    except gate.Unmeasured as exc:
        echo(f"gate refused, nothing shipped: {exc}")
        return False
    worse = gate.gate(new, old)
    echo(gate.format_tables(["new", "previous"], [new, old]))
    card = json.loads((out_dir / "default.json").read_text())
    card["gate"] = {"passed": not worse, "worse": worse, "against": previous[0].name,
                    "held_out": f"{len(videos)} real videos of the test split's groups (no photo, nothing fitted on)",
                    "test_split": {"new": new, "previous": old}}
    if worse:
        (out_dir / "default.json").write_text(json.dumps(card, indent=1, default=str) + "\n", encoding="utf-8")
        echo("gate FAILED: " + "; ".join(worse))
        return False
    names = ("default.onnx", "default_audio.onnx") if own_sound else ("default.onnx",)
    for name in names:
        shutil.copyfile(out_dir / name, target / name)
    card["measured"]["scan_speed"] = scan_speed(target / "default.onnx")  # what ships, in this run
    card["file"], card["sha256"] = "default.onnx", file_sha256(target / "default.onnx")
    card["bytes"] = (target / "default.onnx").stat().st_size
    if own_sound:
        card["audio_sha256"] = file_sha256(target / "default_audio.onnx")
    (target / "default.json").write_text(json.dumps(card, indent=1, default=str) + "\n", encoding="utf-8")
    echo(f"gate passed: shipped {', '.join(str(target / n) for n in names)}; "
         f"{card['measured']['scan_speed']['summary']}")
    return True
