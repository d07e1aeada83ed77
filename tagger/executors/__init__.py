"""Executors: where the per-video step (`tagger.step`) runs, behind one small interface.

The scan hands an executor a stream of plain jobs and reads back, in one stream, when each video
starts (`Started`) and its outcome (its window scores or a failure) as soon as it is ready; it
never sees how the executor gets there, and the executor knows nothing of the scan, the database
or the terminal. `local` runs the step in decoder processes on this machine, `ray` in actors on a
Ray cluster.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from tagger.config import EXECUTORS
from tagger.errors import UsageError
from tagger.model import LoadedModel
from tagger.step import AUDIO, Outcome, VideoJob


class JobQueue(Protocol):
    """The jobs to run, taken one at a time as there is room (the scan claims each video as its job
    is taken); `len()` says how many at most are left."""

    def __iter__(self) -> Iterator[VideoJob]: ...
    def __next__(self) -> VideoJob: ...
    def __len__(self) -> int: ...


@dataclass(frozen=True)
class Started:
    """The executor began the per-video step of `job`."""

    job: VideoJob


@dataclass(frozen=True)
class Recoveries:
    """What an executor survived during a scan: workers that died under a video (and, of the
    nodes they ran on, those that are gone), and the videos it therefore ran again."""

    workers_lost: int = 0
    nodes_lost: int = 0
    videos_retried: int = 0


class Executor(ABC):
    """Runs the per-video step for every job of a queue and yields each video's outcome.

    `models` maps each stream (tagger.step.VIDEO, AUDIO) to its loaded model: an executor may score
    with them in this process or load the same files where it runs the step. `batch_size` is the
    windows per inference call the user asked for (0: each model's automatic size where it runs);
    `workers` how many processes or actors run the step (None: the executor's default).
    """

    def __init__(self, models: Mapping[str, LoadedModel], batch_size: int, workers: int | None, timeout: float):
        self.models, self.batch_size, self.workers, self.timeout = dict(models), batch_size, workers, timeout

    @abstractmethod
    def outcomes(self, jobs: JobQueue) -> Iterator[Started | Outcome]:
        """Take jobs while there is room, yield `Started(job)` as each begins and its outcome as it
        finishes (in any order). A video that crashes or hangs its worker comes back as a
        VideoFailure; the other videos go on."""

    @property
    def providers(self) -> list[str]:
        """The onnxruntime providers inference runs on."""
        return self.models["video"].providers

    @property
    def recoveries(self) -> Recoveries:
        """What this executor survived so far (read by the scan when the stream ends)."""
        return Recoveries()

    def close(self) -> None:
        """Release workers, actors, connections."""


AUDIO_BATCH = 16  # sound patches per inference call: the music model is small


def batch_sizes(models: Mapping[str, LoadedModel], requested: int) -> dict[str, int]:
    """Windows per inference call for each stream's model: `requested`, or the model's auto size."""
    return {stream: AUDIO_BATCH if stream == AUDIO else requested or model.auto_batch_size()
            for stream, model in models.items()}


def make_executor(name: str, models: Mapping[str, LoadedModel], batch_size: int, workers: int | None,
                  timeout: float, ray_address: str | None = None, device: str = "auto") -> Executor:
    """The executor called `name` (see EXECUTORS).

    Raises:
        UsageError: an unknown name, or `ray` without the ray extra installed.
    """
    if name == "local":
        from tagger.executors.local import LocalExecutor

        return LocalExecutor(models, batch_size, workers, timeout)
    if name == "ray":
        from tagger.executors.ray_executor import RayExecutor

        return RayExecutor(models, batch_size, workers, timeout, ray_address, device)
    raise UsageError(f"unknown --executor {name!r}: choose one of {', '.join(EXECUTORS)}")
