"""Load an exported ONNX model, read its contract, pick execution providers, score batches.

The shipped default lives in the package `tagger.exports` (the repository's `exports/` folder), so
it is found after a plain `pip install .` as well as in an editable install.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
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
BATCH_CANDIDATES = (1, 2, 4, 8, 16, 32, 64, 128)  # windows per call that measure_batch_size tries
BATCH_TOLERANCE = 0.05  # the smallest batch within 5% of the best throughput is chosen


@dataclass(frozen=True)
class BatchMeasurement:
    """Windows a second at each batch size tried on one session, and the size chosen."""

    rates: dict[int, float]  # batch size -> windows a second; sizes that failed (out of memory) are absent
    chosen: int

    def describe(self) -> str:
        """One line: "batch 32 (measured: 1: 41/s, 2: 80/s, ... windows a second)"."""
        table = ", ".join(f"{size}: {rate:.0f}/s" for size, rate in self.rates.items())
        return f"batch {self.chosen} (measured: {table} windows a second)"


def choose_batch(rates: dict[int, float], tolerance: float = BATCH_TOLERANCE) -> int:
    """The smallest batch size whose throughput is within `tolerance` of the best one measured:
    larger batches add latency and memory for nothing once the device is busy."""
    best = max(rates.values())
    return min(size for size, rate in rates.items() if rate >= (1.0 - tolerance) * best)


def measure_batch_size(model: LoadedModel, candidates: tuple[int, ...] = BATCH_CANDIDATES,
                       seconds: float = 0.25, clock=time.perf_counter) -> BatchMeasurement:
    """Time `model.run` at each batch size of `candidates` (random inputs of the model's shape,
    one untimed call first, then calls for about `seconds`) and choose by `choose_batch`.

    Stops early when a size fails (the device ran out of memory) or runs at under half the best
    rate so far (past the device's sweet spot); the sizes measured until then decide.
    """
    rates: dict[int, float] = {}
    for size in candidates:
        inputs = model.sample_input(size)
        try:
            model.run(inputs)
            calls, start = 0, clock()
            while calls < 2 or (clock() - start < seconds and calls < 50):
                model.run(inputs)
                calls += 1
            elapsed = clock() - start
        except Exception:  # onnxruntime's allocation failures are untyped
            if not rates:
                raise
            break
        rates[size] = size * calls / max(elapsed, 1e-9)
        if rates[size] < 0.5 * max(rates.values()):
            break
    return BatchMeasurement(rates, choose_batch(rates))


@dataclass
class LoadedModel:
    """An onnxruntime session plus the contract and identity of the model it runs."""

    path: Path
    sha256: str
    contract: ModelContract
    session: object  # onnxruntime.InferenceSession
    output_name: str
    features: bool = False  # the model gives `features` too (tagger.features)
    io_binding: bool = False  # run through onnxruntime IO binding (load_model sets it for CUDA sessions)
    measured: BatchMeasurement | None = field(default=None, compare=False)  # auto_batch_size on CUDA

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers())

    def auto_batch_size(self) -> int:
        """Windows per inference call when the user gives none: on CUDA the size measured on this
        session (`measure_batch_size`, once per loaded model); on a CPU about 16 input frames.

        Measured on 2 cores with the default model (8 frames at 224x224): 1 window per call ran at
        259 ms a window and 296 MB peak, 16 windows at 531 ms and 3.7 GB; larger CPU batches only
        thrash the caches. A GPU's best size depends on the card and the model: it is measured.
        """
        if CUDA not in self.providers:
            return max(1, 16 // max(1, self.contract.input_frames))
        if self.measured is None:
            self.measured = measure_batch_size(self)
        return self.measured.chosen

    def scores(self, inputs: np.ndarray) -> np.ndarray:
        """Per-label scores in [0, 1]: video frames (N, T*C, H, W, 3) uint8 or audio (N, S) float32 -> (N, K)."""
        return self._probabilities(self._outputs(inputs, [self.output_name])[0])

    def run(self, inputs: np.ndarray) -> Scored:
        """Scores, and features when the model gives them, of a batch of inputs."""
        if not self.features:
            return Scored(self.scores(inputs))
        raw, features = self._outputs(inputs, [self.output_name, FEATURES_OUTPUT])
        return Scored(self._probabilities(raw), np.asarray(features, dtype=np.float32))

    def _outputs(self, inputs: np.ndarray, names: list[str]) -> list[np.ndarray]:
        if self.io_binding:
            return self._run_bound(inputs, names)
        return self.session.run(names, {self.contract.input_name: inputs})

    def _run_bound(self, inputs: np.ndarray, names: list[str]) -> list[np.ndarray]:
        """One call through onnxruntime's IO binding: the batch is copied to the session's device
        once, as it is (uint8 frames: a quarter of the bytes of the float tensor the graph makes of
        them), and each output is written straight into a host buffer, with no device copy of its own
        left for Python to fetch."""
        import onnxruntime as ort

        device = "cuda" if CUDA in self.providers else "cpu"
        binding = self.session.io_binding()
        value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(inputs), device, 0)
        binding.bind_ortvalue_input(self.contract.input_name, value)
        for name in names:
            binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()

    def sample_input(self, batch: int, seed: int = 0) -> np.ndarray:
        """A batch of random inputs of this model's shape, for measuring: uint8 frames of a 16:9
        picture for a video model (a whole-frame model's frame trimmed as the scan trims it), float
        sound for an audio model."""
        rng = np.random.default_rng(seed)
        c = self.contract
        if c.kind != "video":
            return rng.uniform(-0.5, 0.5, (batch, round(c.patch_seconds * c.sample_rate))).astype(np.float32)
        if c.whole_frame:
            from tagger.decode import whole_frame

            frames = rng.integers(0, 256, (batch, c.clip_len, c.resize, c.resize * 16 // 9, 3), dtype=np.uint8)
            return np.ascontiguousarray(whole_frame(frames, c.whole_frame))
        return rng.integers(0, 256, (batch, c.input_frames, *c.size, 3), dtype=np.uint8)

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
    return LoadedModel(model_path, file_sha256(model_path), contract, session, output_name, features,
                       io_binding=CUDA in session.get_providers())


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
