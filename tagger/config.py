"""Settings: defaults, environment variables (TAGGER_DB, TAGGER_MODEL) and flags, in one place.

Precedence for the database and the model: the flag, else the environment variable, else the
default (the user data directory; the model shipped in `tagger.exports`).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tagger.decode import DECODERS, source_class
from tagger.discover import DiscoveryRules
from tagger.errors import UsageError, check_choice, check_range
from tagger.fusion import FusionRules
from tagger.segments import SegmentRules
from tagger.windows import check_hop

ENV_DB = "TAGGER_DB"
ENV_MODEL = "TAGGER_MODEL"
ENV_AUDIO_MODEL = "TAGGER_AUDIO_MODEL"
STREAMS = ("both", "video")


def default_db_path() -> Path:
    """tags.db in the user data directory (e.g. ~/.local/share/tagger on Linux)."""
    from platformdirs import user_data_dir

    return Path(user_data_dir("tagger", appauthor=False)) / "tags.db"


def resolve_db(flag: str | None) -> str:
    """The database to use: --db, else $TAGGER_DB, else the user data directory."""
    return flag or os.environ.get(ENV_DB) or str(default_db_path())


def resolve_model(flag: str | None) -> str | None:
    """The model to use: --model, else $TAGGER_MODEL, else None (the shipped default)."""
    return flag or os.environ.get(ENV_MODEL) or None


def resolve_heads(flag: str | None) -> Path:
    """The add-on heads folder: --heads, else $TAGGER_HEADS, else heads/ in the user data directory."""
    from tagger.heads import default_heads_dir

    return Path(flag).expanduser() if flag else default_heads_dir()


def resolve_audio_model(flag: str | None) -> str | None:
    """The audio model: --audio-model, else $TAGGER_AUDIO_MODEL, else None (the shipped one)."""
    return flag or os.environ.get(ENV_AUDIO_MODEL) or None


MAX_DEFAULT_WORKERS = 8  # each decoder process holds 50-80 MB; beyond 8, give them threads instead
MAX_WORKERS = 64  # 64 decoder processes already hold 3-5 GB; more is a typing mistake
MAX_BATCH_SIZE = 4096  # windows per inference call; 4096 default-model windows are 4.9 GB of frames
MAX_THREADS = 256
MAX_ACTORS = 100_000  # Ray actors: one per CPU of the cluster is the default
EXECUTORS = ("local", "ray")  # where the per-video step runs: see tagger.executors


def usable_cores() -> int:
    """The cores this process may run on (CPU affinity, e.g. taskset or a container's cpuset)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def default_workers() -> int:
    """Decoder processes: one per core, up to MAX_DEFAULT_WORKERS. Each decodes with its share of
    the cores (see tagger.executors.local.decoder_threads); onnxruntime's threads sleep rather than spin while
    they wait for it."""
    return min(usable_cores(), MAX_DEFAULT_WORKERS)


@dataclass(frozen=True)
class ScanSettings:
    """Everything `tagger scan` needs besides the paths."""

    db: str
    model: str | None = None  # None: the shipped default
    device: str = "auto"  # CUDA when usable, else CPU
    hop: float | None = None  # seconds between window starts; None = one window length
    segment_rules: SegmentRules = field(default_factory=SegmentRules)
    discovery: DiscoveryRules = field(default_factory=DiscoveryRules)
    batch_size: int = 0  # windows per inference call, gathered across videos; 0 = auto (see model.py)
    workers: int | None = None  # decoder processes, or Ray actors; None: the executor's default
    timeout: float = 120.0  # seconds a decoder may go without progress before it is killed
    threads: int = 0  # onnxruntime intra-op threads; 0 = onnxruntime's choice
    force: bool = False  # re-tag videos even when unchanged
    decoders: tuple[str, ...] = DECODERS  # tried in order; PyAV first: see decode.py
    streams: str = "both"  # "both": vision and sound when an audio model is there; "video": vision only
    audio_model: str | None = None  # None: the shipped audio model, if installed
    fusion: FusionRules = field(default_factory=FusionRules)
    executor: str = "local"  # where the per-video step runs: local processes, or ray (a cluster)
    ray_address: str | None = None  # the Ray cluster; None: $RAY_ADDRESS, else a new local Ray
    lease: float = 60.0  # seconds a claimed video stays claimed after its scan stops renewing (dies)
    features: bool = True  # store each window's features (models that give them): heads added later use them
    heads: str | None = None  # the add-on heads folder; None: $TAGGER_HEADS, else the user data directory's heads/

    def tagging_key(self) -> str:
        """The settings that shape a video's stored tags besides the file and the models, as JSON:
        `windows`, what is decoded and scored, and `segments`, how the stored scores become
        segments. A scan with other `windows` decodes a stored video again; one with other
        `segments` only re-derives its segments from the stored window scores."""
        return json.dumps({
            "windows": {"hop": self.hop, "streams": self.streams},
            "segments": {**asdict(self.segment_rules), "fusion": asdict(self.fusion)},  # threshold included
        }, sort_keys=True)

    @staticmethod
    def stored_rules(key: str | None) -> tuple[SegmentRules, FusionRules]:
        """The segment and fusion rules a stored `tagging_key` records (the defaults for None: a
        video stored before settings were recorded, or a key this tagger cannot read)."""
        try:
            rules = dict(json.loads(key)["segments"])
            fusion = FusionRules(**rules.pop("fusion"))
            return SegmentRules(**rules), fusion
        except (TypeError, ValueError, KeyError, AttributeError, UsageError):
            return SegmentRules(), FusionRules()

    def __post_init__(self) -> None:
        """Every option checked here, so the CLI and library callers get the same one-line errors."""
        check_hop(self.hop)
        check_range("--batch-size", self.batch_size, 0, MAX_BATCH_SIZE, note=" windows (0 = auto)")
        check_choice("--executor", self.executor, EXECUTORS)
        if self.executor == "ray":
            check_range("--workers", self.workers, 1, MAX_ACTORS, note=" Ray actors")
        else:
            check_range("--workers", self.workers, 1, MAX_WORKERS, note=" decoder processes")
            if self.ray_address:
                raise UsageError("--ray-address needs --executor ray")
        check_range("--lease", self.lease, 0, above=True, note=" seconds")
        check_range("--timeout", self.timeout, 1, note=" (seconds a decoder may go without progress)")
        check_range("--threads", self.threads, 0, MAX_THREADS, note=" (0 = onnxruntime's choice)")
        check_choice("--streams", self.streams, STREAMS)
        if not self.decoders:
            raise UsageError("--decoders names no decoder: give pyav, decord or module:FrameSourceClass")
        for name in self.decoders:
            source_class(name)  # an unknown decoder is a usage error now, not a failure per video
