"""Build the audio tagger `exports/musicnn.onnx` (+ card `musicnn.json`) from the musicnn 0.1.0 wheel.

    pip download --no-deps musicnn==0.1.0 -d /tmp/musicnn      # once; never pip install it
    python -m training.build_musicnn --wheel /tmp/musicnn/musicnn-0.1.0-py3-none-any.whl

Needs only torch, numpy, onnx and onnxruntime (plus PyAV for the measurements on the shared clips):
the TF checkpoint inside the wheel is read by `training.tf_checkpoint`, and parity is checked
against `tests/data/musicnn_reference.npz`, which the ORIGINAL TensorFlow graph produced
(`tests/make_musicnn_reference.py`, run once in a throwaway TensorFlow venv).

The graph takes `audio` float32 `[N, 48128]` (3.008 s of 16 kHz mono PCM: exactly the 187 unpadded
STFT frames the model was trained on) and outputs `probs` float32 `[N, 58]`: 8 instrument labels (max over
their MTT tags, `training/musicnn_map.py`) then the 50 raw MTT tags as `mtt:<tag>`.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import tempfile
import time
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from tagger.contract import AUDIO_INPUT_NAME, ModelContract
from training.musicnn import LogMel, Musicnn, MusicnnConfig, load_musicnn_weights
from training.musicnn_map import MTT_TAGS, as_card, instrument_labels, labels, raw_labels, tag_mask
from training.tf_checkpoint import read_tf_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SHARED_CLIPS = ROOT.parent / "shared" / "data" / "clips"
REFERENCE = ROOT / "tests" / "data" / "musicnn_reference.npz"
CHECKPOINT_IN_WHEEL = "musicnn/MTT_musicnn/"
OPSET = 17
MAX_EXPORT_MB = 25.0
PARITY_ATOL = 1e-4  # max |probs - TF probs|: measured ~5e-6; float32 reordering stays far below 1e-4


@dataclass(frozen=True)
class MusicnnBuildConfig:
    """What the exported audio model calls a tag."""

    instrument_threshold: float = 0.6  # per instrument label, per 3 s patch: see CHOICES["thresholds"]
    raw_threshold: float = 1.01  # raw mtt: tags are context for fusion, never tags on their own
    audio_only_threshold: float = 0.8  # labels with no video evidence at all: see CHOICES
    version: str = "1"


class MusicnnTagModel(nn.Module):
    """PCM `(N, S)` -> `(N, 8 + 50)` probabilities: instrument labels, then the raw MTT tags."""

    def __init__(self, config: MusicnnConfig, variables: dict[str, np.ndarray]) -> None:
        super().__init__()
        self.log_mel = LogMel(config)
        self.network = Musicnn(config)
        load_musicnn_weights(self.network, variables)
        self.register_buffer("tag_mask", torch.tensor(tag_mask()))  # (L, 50)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        tags = torch.sigmoid(self.network(self.log_mel(audio)))  # (N, 50)
        # probabilities are >= 0, so zeroing the unmapped tags leaves the max over the mapped ones
        instruments = (tags[:, None, :] * self.tag_mask).amax(dim=2)  # (N, L)
        return torch.cat([instruments, tags], dim=1)  # (N, L + 50)


def checkpoint_from_wheel(wheel: Path) -> dict[str, np.ndarray]:
    """The MTT_musicnn variables inside the musicnn wheel (no TensorFlow, nothing installed)."""
    with tempfile.TemporaryDirectory() as folder, zipfile.ZipFile(wheel) as archive:
        members = [name for name in archive.namelist() if name.startswith(CHECKPOINT_IN_WHEEL)]
        if not members:
            raise SystemExit(f"Error: {wheel} has no {CHECKPOINT_IN_WHEEL}: is it musicnn-0.1.0-py3-none-any.whl?")
        archive.extractall(folder, members)
        return read_tf_checkpoint(f"{folder}/{CHECKPOINT_IN_WHEEL}")  # a prefix: files are .../.index


def export_onnx(model: nn.Module, samples: int, path: Path) -> None:
    """TorchScript exporter (no onnxscript needed), batch axis dynamic."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(2, samples),), str(path), input_names=[AUDIO_INPUT_NAME],
                          output_names=["probs"], dynamic_axes={AUDIO_INPUT_NAME: {0: "N"}, "probs": {0: "N"}},
                          opset_version=OPSET, do_constant_folding=True, dynamo=False)


def parity(model: MusicnnTagModel, onnx_path: Path, reference: Path = REFERENCE) -> dict[str, object]:
    """Max abs differences against the original TensorFlow graph's recorded outputs, and log-mel vs librosa."""
    ref = np.load(reference)
    audio = ref["audio_int16"].astype(np.float32) / 32768  # (R, S)
    raw = slice(len(instrument_labels()), None)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    onnx_probs = session.run(["probs"], {AUDIO_INPUT_NAME: audio})[0]
    with torch.no_grad():
        torch_probs = model(torch.from_numpy(audio)).numpy()
        net_only = torch.sigmoid(model.network(torch.from_numpy(ref["log_mel"]))).numpy()
        torch_mel = model.log_mel(torch.from_numpy(audio)).numpy()
    with tempfile.TemporaryDirectory() as folder:  # the log-mel half alone, as onnxruntime runs it
        mel_path = Path(folder) / "log_mel.onnx"
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(model.log_mel, (torch.from_numpy(audio),), str(mel_path), opset_version=OPSET,
                              input_names=["audio"], output_names=["log_mel"], dynamo=False)
        onnx_mel = ort.InferenceSession(str(mel_path), providers=["CPUExecutionProvider"]).run(None, {"audio": audio})[0]
    result = {
        "reference": f"tests/data/musicnn_reference.npz: {', '.join(map(str, ref['sources']))}",
        "reference_versions": [str(v) for v in ref["versions"]],
        "torch_network_vs_tf_max_abs_diff": float(np.abs(net_only - ref["probs"]).max()),
        "torch_vs_tf_max_abs_diff": float(np.abs(torch_probs[:, raw] - ref["probs"]).max()),
        "onnx_vs_tf_max_abs_diff": float(np.abs(onnx_probs[:, raw] - ref["probs"]).max()),
        "onnx_vs_torch_max_abs_diff": float(np.abs(onnx_probs - torch_probs).max()),
        "log_mel_torch_vs_librosa_max_abs_diff": float(np.abs(torch_mel - ref["log_mel"]).max()),
        "log_mel_onnx_vs_librosa_max_abs_diff": float(np.abs(onnx_mel - ref["log_mel"]).max()),
        "mel_matrix_vs_librosa_max_abs_diff": float(np.abs(model.log_mel.mel_matrix.numpy() - ref["mel_matrix"]).max()),
        "wheel_float16_mel_vs_float32_probs_max_abs_diff": float(np.abs(ref["probs_float16_mel"] - ref["probs"]).max()),
    }
    if not result["onnx_vs_tf_max_abs_diff"] <= PARITY_ATOL:
        raise SystemExit(f"Error: onnxruntime and the TF reference disagree by {result['onnx_vs_tf_max_abs_diff']:.3g}")
    return result


def decode_audio(path: Path, sample_rate: int) -> np.ndarray | None:
    """First audio stream as mono float32 PCM at `sample_rate` (PyAV resampler), None if there is none."""
    import av

    with av.open(str(path)) as container:
        if not container.streams.audio:
            return None
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        chunks = []
        for frame in container.decode(container.streams.audio[0]):
            chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(frame))
        chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
    return np.concatenate(chunks).astype(np.float32) if chunks else None


def patches(audio: np.ndarray, samples: int) -> np.ndarray:
    """Consecutive `(P, samples)` patches; the last one ends at the end; short audio is repeated."""
    if len(audio) < samples:
        audio = np.tile(audio, -(-samples // max(len(audio), 1)))[:samples]
    starts = list(range(0, len(audio) - samples + 1, samples))
    if starts[-1] + samples < len(audio):
        starts.append(len(audio) - samples)
    return np.stack([audio[s:s + samples] for s in starts])


def score_clips(onnx_path: Path, config: MusicnnConfig, clips: Path = SHARED_CLIPS) -> list[dict[str, object]]:
    """Per shared clip: mean and max over 3 s patches of every instrument label, and the top raw tags."""
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names, count = labels(), len(instrument_labels())
    rows = []
    for path in sorted(clips.glob("*")):
        audio = decode_audio(path, config.sample_rate)
        if audio is None:
            rows.append({"clip": path.name, "audio": False})
            continue
        probs = session.run(["probs"], {AUDIO_INPUT_NAME: patches(audio, config.patch_samples)})[0]
        mean, peak = probs.mean(axis=0), probs.max(axis=0)
        top_raw = np.argsort(-mean[count:])[:5]
        rows.append({
            "clip": path.name, "audio": True, "seconds": round(len(audio) / config.sample_rate, 2),
            "patches": len(probs), "rms": round(float(np.sqrt(np.mean(audio ** 2))), 4),
            "instruments": {names[i]: {"mean": round(float(mean[i]), 3), "max": round(float(peak[i]), 3)}
                            for i in range(count)},
            "top_mtt_mean": {MTT_TAGS[i]: round(float(mean[count + i]), 3) for i in top_raw},
        })
    return rows


def score_probes(onnx_path: Path, config: MusicnnConfig) -> dict[str, dict[str, float]]:
    """Instrument scores on synthetic sounds a soundtrack may hold: silence, noise, a test tone."""
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    t = np.arange(config.patch_samples) / config.sample_rate
    noise = np.random.default_rng(0).standard_normal(config.patch_samples)
    probes = {"silence (short tracks are padded with it)": np.zeros_like(t), "white noise, rms 0.1": 0.1 * noise,
              "1 kHz test tone, amplitude 0.5": 0.5 * np.sin(2 * np.pi * 1000 * t),
              "full-scale square wave, 110 Hz": np.sign(np.sin(2 * np.pi * 110 * t))}
    probs = session.run(["probs"], {AUDIO_INPUT_NAME: np.stack(list(probes.values())).astype(np.float32)})[0]
    names = instrument_labels()
    return {probe: {names[i]: round(float(row[i]), 3) for i in np.argsort(-row[:len(names)])[:2]}
            for probe, row in zip(probes, probs)}


def time_patches(onnx_path: Path, samples: int, batch: int, repeats: int = 10) -> float:
    """Median milliseconds per patch for onnxruntime on this machine's CPU, at `batch` patches."""
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    audio = (0.1 * np.random.default_rng(0).standard_normal((batch, samples))).astype(np.float32)
    session.run(None, {AUDIO_INPUT_NAME: audio})  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, {AUDIO_INPUT_NAME: audio})
        times.append((time.perf_counter() - start) / batch)
    return round(1000 * float(np.median(times)), 2)


def contract_for(build: MusicnnBuildConfig, config: MusicnnConfig, train: dict) -> ModelContract:
    """The tagger contract: labels, thresholds, PCM geometry, and the mel parameters for the record.

    Args:
        build: thresholds and version.
        config: the spectrogram and patch geometry.
        train: provenance and parity results, stored as `tagger.train`.
    """
    thresholds = {**{label: build.instrument_threshold for label in instrument_labels()},
                  **{label: build.raw_threshold for label in raw_labels()}}
    mel = {"n_fft": config.n_fft, "hop": config.hop, "n_mels": config.n_mels, "fmin": 0.0,
           "fmax": config.sample_rate / 2, "mel_scale": "slaney", "mel_norm": "slaney", "window": "hann (periodic)",
           "center": False, "padding": "none (frames lie inside the patch)", "power": 2.0, "frames": config.n_frames,
           "log": f"log10({config.log_scale:g} * mel + 1)", "dtype": "float32"}
    return ModelContract(
        labels=labels(), thresholds=thresholds, output="probs", kind="audio", sample_rate=config.sample_rate,
        patch_seconds=config.patch_samples / config.sample_rate, background=None, arch="musicnn-mtt",
        version=build.version, train=train,
        extra={"mel": mel, "mapping": {row["label"]: row["mtt_tags"] for row in as_card()},
               "audio_only_threshold": {label: build.audio_only_threshold for label in instrument_labels()},
               "raw_tag_prefix": "mtt:", "input_samples": config.patch_samples},
    )


CHOICES = {
    "patch": "48128 samples = 3.008 s, unpadded: frame t covers samples [256 t, 256 t + 512), so exactly the "
             "187 frames of training come out, each computed from real sound. The original cuts patches out "
             "of one centred spectrogram of the whole file, so its edge frames see the neighbouring sound "
             "too; this input reproduces those frames exactly (tests/data/musicnn_reference.npz is cut that "
             "way). A 47616-sample patch padded librosa-style (reflect) would give 187 frames as well, but "
             "changed the edge frames by up to 3.4 (log10 units) and probabilities by up to 0.077.",
    "log_mel": "computed in the graph in float32. The wheel casts the mel power to float16 before "
               "log10(10000 x + 1); 10000 x overflows float16 for x > 6.55, which ordinary music reaches "
               "(71-950 inf values per reference patch), changing its probabilities by up to 0.59.",
    "mapping": "instrument score = max over its MTT tags' probabilities (training/musicnn_map.py).",
    "thresholds": "0.6 for every instrument label, per 3 s patch: above the highest patch of every clip "
                  "without an instrument on the shared clips (typing -> Drumming 0.49, Big Buck Bunny -> "
                  "PlayingGuitar 0.48, deadlift -> Drumming 0.42) with a 0.11 margin. It keeps flute "
                  "(0.81-0.94 on all 6 patches), the pianist (21 of 33 patches), the violin (1 of 3: 0.73) "
                  "and chaplin's piano soundtrack (0.97-0.99 on all 4, a tag the picture does not "
                  "support: fusion must handle it), and loses the concert snare (max 0.45, below "
                  "typing): audio Drumming is not separable from keystrokes here. Known confusions "
                  "above 0.6: the pianist -> PlayingGuitar on 3 of 33 patches (0.61, 0.62, 0.72), the "
                  "cello clip -> PlayingViolin on 2 of 3 (0.62, 0.66; PlayingCello peaks at 0.48). "
                  "Raw mtt: labels get 1.01 so they never become tags on their own.",
    "audio_only_threshold": "0.8 per instrument label, used by the tagger's fusion only for labels no "
                            "video model has (e.g. PlayingSitar): sound alone must beat every confusion "
                            "measured above (0.72). Unmeasured for sitar and harp: no shared clip has them.",
}


def build(wheel: Path, out_dir: Path = ROOT / "exports", build_config: MusicnnBuildConfig = MusicnnBuildConfig(),
          clips: Path = SHARED_CLIPS) -> dict:
    """Export `out_dir/musicnn.onnx`, check it, measure it, write its card; return the card."""
    config = MusicnnConfig()
    model = MusicnnTagModel(config, checkpoint_from_wheel(wheel)).eval()
    onnx_path = out_dir / "musicnn.onnx"
    export_onnx(model, config.patch_samples, onnx_path)
    checks = parity(model, onnx_path)
    train = {"data": "MagnaTagATune top-50 tags (trained by Pons & Serra; not retrained here)",
             "weights": f"{wheel.name} {CHECKPOINT_IN_WHEEL} (ISC licence)",
             "test_roc_auc": 0.9067, "test_pr_auc": 0.3831, **checks}
    proto = onnx.load(str(onnx_path))
    for key, value in contract_for(build_config, config, train).to_metadata().items():
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(onnx_path))
    data = onnx_path.read_bytes()
    if len(data) > MAX_EXPORT_MB * 1e6:
        raise SystemExit(f"Error: {onnx_path} is {len(data) / 1e6:.1f} MB, over {MAX_EXPORT_MB} MB")
    card = {
        "name": "musicnn", "file": onnx_path.name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
        "arch": "musicnn-mtt", "version": build_config.version, "kind": "audio", "labels": list(labels()),
        "background": None,
        "input": {"name": AUDIO_INPUT_NAME, "dtype": "float32", "shape": ["N", config.patch_samples],
                  "sample_rate": config.sample_rate, "patch_seconds": config.patch_samples / config.sample_rate,
                  "range": [-1.0, 1.0], "channels": "mono"},
        "output": {"name": "probs", "shape": ["N", len(labels())]},
        "thresholds": {label: build_config.instrument_threshold for label in instrument_labels()}
        | {"mtt:*": build_config.raw_threshold},
        "config": dataclasses.asdict(config) | dataclasses.asdict(build_config),
        "choices": CHOICES, "mapping": as_card(), "train": train,
        "measured": {"ms_per_patch_batch1": time_patches(onnx_path, config.patch_samples, 1),
                     "ms_per_patch_batch8": time_patches(onnx_path, config.patch_samples, 8),
                     "cpu": f"{os.cpu_count()} cores, onnxruntime CPUExecutionProvider"},
    }
    card["measured"]["synthetic_probes"] = score_probes(onnx_path, config)
    if clips.is_dir():
        card["measured"]["shared_clips"] = score_clips(onnx_path, config, clips)
    onnx_path.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    return card


def main() -> None:
    parser = argparse.ArgumentParser(description="Build exports/musicnn.onnx from the musicnn 0.1.0 wheel.")
    parser.add_argument("--wheel", type=Path, required=True,
                        help="musicnn-0.1.0-py3-none-any.whl (pip download --no-deps musicnn==0.1.0 -d DIR)")
    parser.add_argument("--out", type=Path, default=ROOT / "exports", help="folder for musicnn.onnx and .json")
    args = parser.parse_args()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    card = build(args.wheel, args.out)
    train, measured = card["train"], card["measured"]
    print(f"wrote {args.out / 'musicnn.onnx'} ({card['bytes'] / 1e6:.2f} MB): onnx vs TF "
          f"{train['onnx_vs_tf_max_abs_diff']:.1e}, torch vs TF {train['torch_vs_tf_max_abs_diff']:.1e}, "
          f"log-mel vs librosa {train['log_mel_onnx_vs_librosa_max_abs_diff']:.1e}; "
          f"{measured['ms_per_patch_batch1']} ms/patch (batch 1), {measured['ms_per_patch_batch8']} ms/patch (batch 8)")
    for row in measured.get("shared_clips", []):
        if not row["audio"]:
            print(f"{row['clip']}: no audio")
            continue
        top = sorted(row["instruments"].items(), key=lambda kv: -kv[1]["mean"])[:3]
        print(f"{row['clip']}: " + ", ".join(f"{k} {v['mean']:.2f}/{v['max']:.2f}" for k, v in top)
              + f" | {row['top_mtt_mean']}")


if __name__ == "__main__":
    main()
