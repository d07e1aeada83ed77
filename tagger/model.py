"""Load an exported ONNX model, read its contract, pick execution providers, score batches.

The shipped default lives in the package `tagger.exports` (the repository's `exports/` folder), so
it is found after a plain `pip install .` as well as in an editable install.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from tagger.contract import ModelContract
from tagger.errors import ModelError, UsageError

DEFAULT_MODEL_NAME = "default.onnx"
DEFAULT_AUDIO_MODEL_NAME = "musicnn.onnx"
DEVICES = ("auto", "cpu", "cuda")
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def default_model_path(name: str = DEFAULT_MODEL_NAME) -> Path:
    """A model shipped with the package: `tagger/exports/` once installed, else the source tree's
    `exports/` (running from a checkout, where `tagger` is imported from the working tree)."""
    try:
        return Path(str(resources.files("tagger.exports").joinpath(name)))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[1] / "exports" / name


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Scored:
    """What a model gives for a batch of windows."""

    scores: np.ndarray  # (n, K) in [0, 1]
    features: np.ndarray | None = None  # (n, D) float32: the model's `features` output, when it has one

    def slice(self, begin: int, end: int) -> Scored:
        """Rows begin .. end - 1."""
        return Scored(self.scores[begin:end], None if self.features is None else self.features[begin:end])


FEATURES_OUTPUT = "features"  # the optional second output (tagger.features)


@dataclass
class LoadedModel:
    """An onnxruntime session plus the contract and identity of the model it runs."""

    path: Path
    sha256: str
    contract: ModelContract
    session: object  # onnxruntime.InferenceSession
    output_name: str
    features: bool = False  # the model gives `features` too (tagger.features)

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers())

    def auto_batch_size(self) -> int:
        """Windows per inference call: about 16 input frames on a CPU, 64 on CUDA (a window is
        T * C frames: clip_len times crops).

        Measured on 2 cores with the default model (8 frames at 224x224): 1 window per call ran at
        259 ms a window and 296 MB peak, 16 windows at 531 ms and 3.7 GB; larger CPU batches only
        thrash the caches. A GPU needs bigger batches to be busy.
        """
        frames = 64 if CUDA in self.providers else 16
        return max(1, frames // max(1, self.contract.input_frames))

    def scores(self, inputs: np.ndarray) -> np.ndarray:
        """Per-label scores in [0, 1]: video frames (N, T*C, H, W, 3) uint8 or audio (N, S) float32 -> (N, K)."""
        (raw,) = self.session.run([self.output_name], {self.contract.input_name: inputs})
        return self._probabilities(raw)

    def run(self, inputs: np.ndarray) -> Scored:
        """Scores, and features when the model gives them, of a batch of inputs."""
        if not self.features:
            return Scored(self.scores(inputs))
        raw, features = self.session.run([self.output_name, FEATURES_OUTPUT], {self.contract.input_name: inputs})
        return Scored(self._probabilities(raw), np.asarray(features, dtype=np.float32))

    def _probabilities(self, raw) -> np.ndarray:
        raw = np.asarray(raw, dtype=np.float32)
        if self.contract.output == "probs":
            return raw
        shifted = np.exp(raw - raw.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)


def provider_names(providers) -> str:
    """onnxruntime providers as people call them: "CUDA, CPU" for CUDAExecutionProvider, CPUExecutionProvider."""
    return ", ".join(p.removesuffix("ExecutionProvider") for p in providers)


def _providers_for(device: str, available: list[str]) -> list[str]:
    if device not in DEVICES:
        raise UsageError(f"unknown --device {device!r}: choose one of {', '.join(DEVICES)}")
    if device == "cpu":
        return [CPU]
    if device == "cuda" and CUDA not in available:
        raise ModelError(
            "CUDA was asked for but this onnxruntime has no CUDAExecutionProvider: "
            "pip uninstall onnxruntime && pip install onnxruntime-gpu, or use --device cpu"
        )
    return [CUDA, CPU] if CUDA in available else [CPU]


def load_model(path: str | os.PathLike | None, device: str = "auto", threads: int = 0) -> LoadedModel:
    """Open `path` (None: the shipped default) on `device`, validating the tagger contract.

    Args:
        path: an exported ONNX file.
        device: auto (CUDA when usable, else CPU), cpu, or cuda (fail if CUDA is not usable).
        threads: onnxruntime intra-op threads; 0 lets onnxruntime choose.

    Raises:
        ModelError: missing file, not ONNX, no tagger metadata, wrong input, or CUDA unusable.
    """
    import onnxruntime as ort

    model_path = Path(path) if path is not None else default_model_path()
    if not model_path.is_file():
        hint = "pass --model PATH or set TAGGER_MODEL" if path is not None else "reinstall tagger"
        raise ModelError(f"model not found: {model_path} ({hint})")
    providers = _providers_for(device, ort.get_available_providers())
    options = ort.SessionOptions()
    options.log_severity_level = 3  # onnxruntime warnings are not the user's to act on
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Decoder processes share the cores: idle inference threads must sleep, not spin on them.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if not _looks_like_onnx(model_path):  # a text file, an image: say so, not onnxruntime's protobuf internals
        raise ModelError(f"not an ONNX model: {model_path}: pass an exported .onnx file")
    try:
        session = ort.InferenceSession(str(model_path), sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{model_path} is not a loadable ONNX model ({first})") from exc
    if device == "cuda" and CUDA not in session.get_providers():
        raise ModelError(
            "CUDA was asked for but CUDAExecutionProvider failed to start "
            "(CUDA or cuDNN libraries missing or mismatched; see onnxruntime's CUDA requirements), "
            "or use --device cpu"
        )
    props = dict(session.get_modelmeta().custom_metadata_map)
    contract = ModelContract.from_metadata(props, source=str(model_path))
    output_name, features = _check_io(session, contract, model_path)
    return LoadedModel(model_path, file_sha256(model_path), contract, session, output_name, features)


def load_audio_model(path: str | os.PathLike | None, device: str = "auto", threads: int = 0) -> LoadedModel | None:
    """The audio model at `path`, else the shipped one, else None (then scans use vision alone).

    Raises:
        ModelError: `path` is given but missing or invalid, or is not an audio model.
    """
    if path is None:
        shipped = default_model_path(DEFAULT_AUDIO_MODEL_NAME)
        if not shipped.is_file():
            return None
        path = shipped
    model = load_model(path, device, threads)
    if model.contract.kind != "audio":
        raise ModelError(f"{model.path} is a {model.contract.kind} model, not an audio model: pass it as --model")
    return model


def _looks_like_onnx(path: Path) -> bool:
    """Whether `path` starts as an ONNX file does: a serialized ModelProto opens with its field 1,
    ir_version, a varint (tag byte 0x08); protobuf writes fields in number order."""
    try:
        with open(path, "rb") as handle:
            return handle.read(1) == b"\x08"
    except OSError:
        return True  # let onnxruntime say what is wrong with it


def _check_io(session, contract: ModelContract, model_path: Path) -> tuple[str, bool]:
    """The output the scores come from, and whether the model gives features; ModelError when its
    inputs and outputs are not what its contract says."""
    inputs = {i.name: i for i in session.get_inputs()}
    name = contract.input_name
    if name not in inputs:
        raise ModelError(f"{model_path}: has no input named {name!r} (found {', '.join(inputs)})")
    shape = inputs[name].shape
    if contract.kind == "video" and contract.whole_frame:
        expected = [contract.clip_len, "H", "W", 3]  # any frame size: the video's
    elif contract.kind == "video":
        expected = [contract.input_frames, *contract.size, 3]
    else:
        expected = [round(contract.patch_seconds * contract.sample_rate)]
    if len(shape) != len(expected) + 1 or any(isinstance(d, int) and isinstance(e, int) and d != e
                                              for d, e in zip(shape[1:], expected)):
        crops = contract.kind == "video" and contract.crops > 1
        frames = f" ({contract.clip_len} frames x {contract.crops} crops)" if crops else ""
        raise ModelError(
            f"{model_path}: input {name} has shape {shape}, expected [N, {', '.join(map(str, expected))}]{frames}"
        )
    outputs = {o.name: o for o in session.get_outputs()}
    if contract.output not in outputs:
        raise ModelError(f"{model_path}: has no output named {contract.output!r} (found {', '.join(outputs)})")
    if contract.feature_dim and FEATURES_OUTPUT not in outputs:
        raise ModelError(f"{model_path}: its metadata promises {FEATURES_OUTPUT!r} of {contract.feature_dim} values "
                         f"but the graph has no such output (found {', '.join(outputs)})")
    return contract.output, bool(contract.feature_dim)


@dataclass(frozen=True)
class ScanModels:
    """The models a scan runs, and what it says about the sound model it chose."""

    video: LoadedModel
    audio: LoadedModel | None
    audio_note: str  # which sound model and why, or why none: shown in the scan's summary


def is_shipped_default(model: LoadedModel) -> bool:
    """True for the shipped default vision model, wherever the file was copied to."""
    shipped = default_model_path()
    return shipped.is_file() and (model.path.resolve() == shipped.resolve() or model.sha256 == file_sha256(shipped))


def load_scan_models(settings) -> ScanModels:
    """The vision model of `settings` (a ScanSettings) and the sound model that goes with it.

    The pairing rule, in one place: with `--streams video`, none; an explicit `--audio-model`
    (or $TAGGER_AUDIO_MODEL) always; else the sound model the vision model names in its metadata
    (`tagger.audio_model`: a file beside it or among the shipped models); else, for the shipped
    default vision model, the shipped sound model it was tuned with. Any other vision model runs
    alone: a sound model tuned for another vision model would tag what it never sees.

    Raises:
        ModelError: a model is missing or invalid, the vision model is an audio model, or the
            sound model it names is not found.
    """
    # On a cluster the actors load the models where they run, on their devices; here they are read.
    device = "cpu" if settings.executor == "ray" else settings.device
    video = load_model(settings.model, device, settings.threads)
    if video.contract.kind != "video":
        raise ModelError(f"{video.path} is an {video.contract.kind} model: pass it as --audio-model")
    if settings.streams == "video":
        return ScanModels(video, None, "none (--streams video)")
    if settings.audio_model is not None:
        audio = load_audio_model(settings.audio_model, device, settings.threads)
        return ScanModels(video, audio, f"{audio.path.name} (--audio-model)")
    named = video.contract.extra.get("audio_model")
    if named:
        beside, shipped = video.path.parent / str(named), default_model_path(str(named))
        found = beside if beside.is_file() else shipped if shipped.is_file() else None
        if found is None:
            raise ModelError(f"{video.path} names the sound model {named}, found neither beside it nor among the "
                             "shipped models: pass --audio-model PATH, or --streams video")
        audio = load_audio_model(found, device, settings.threads)
        return ScanModels(video, audio, f"{audio.path.name} (named by {video.name})")
    if is_shipped_default(video):
        audio = load_audio_model(None, device, settings.threads)
        if audio is None:
            return ScanModels(video, None, "none (the shipped sound model is not installed)")
        return ScanModels(video, audio, f"{audio.path.name} (shipped with the default model)")
    return ScanModels(video, None, f"none ({video.name} names no sound model; add one with --audio-model)")
