"""The Ray executor: the per-video step whole, in actors on a Ray cluster (`pip install 'tagger[ray]'`).

Each actor holds one onnxruntime session per model (on a GPU where the cluster has them) and runs
`tagger.step.score_video` on one video at a time: video paths travel to the actors, window scores
travel back, frames never leave the node that decodes them. Every node must see the videos at
the same paths (a shared filesystem) and have tagger installed; the model files travel with the
actors through Ray's object store.

This is an actor pool supervised here rather than a Ray Data pipeline: Ray Data retries a failed
task or fails the whole dataset, while a scan must tell a video that kills or hangs its worker
(stored as failed, the scan goes on) from a node that goes away (its videos run again elsewhere).
An actor that dies is replaced and its video run once more on another actor; a video that kills
two actors fails with the reason. An actor whose video makes no progress for `timeout` seconds is
killed and replaced, and the video fails. Replacements take work once they have started, so a
cluster that lost a node goes on with the actors it has.
"""

from __future__ import annotations

import os
import signal
import socket
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from tagger.errors import ModelError, UsageError
from tagger.executors import Executor, JobQueue, Recoveries, Started, batch_sizes
from tagger.model import CPU, LoadedModel, load_model
from tagger.step import Outcome, VideoFailure, VideoJob, score_video

HEALTH_EVERY = 2.0  # seconds between checks of the actors' progress
ANSWER_WITHIN = 5.0  # seconds one health check waits for the actors' answers
STARTUP = 120.0  # seconds to wait for an actor to start while no other can work


class ScoringActor:
    """One Ray actor: loads the scan's models once, then scores one video per call.

    Runs with two threads (max_concurrency=2) so `idle_seconds` answers while `score` works.
    """

    def __init__(self, model_files: Mapping[str, tuple[str, bytes]], device: str, threads: int, batch_size: int):
        self.models: dict[str, LoadedModel] = {}
        with tempfile.TemporaryDirectory(prefix="tagger-models-") as folder:  # sessions keep what they need
            for stream, (name, data) in model_files.items():
                (Path(folder) / name).write_bytes(data)
                self.models[stream] = load_model(Path(folder) / name, device, threads)
        self.batch_sizes = batch_sizes(self.models, batch_size)  # on this actor's device
        self.labels = {stream: len(model.contract.labels) for stream, model in self.models.items()}
        self._last_progress: float | None = None  # None while no video is being scored
        self._lock = threading.Lock()

    def _progress(self) -> None:
        self._last_progress = time.monotonic()

    def score(self, job: VideoJob) -> Outcome:
        """The per-video step for `job`, scored with this actor's sessions."""
        with self._lock:  # one video at a time, whatever max_concurrency allows
            self._progress()
            try:
                scorers = {stream: self.models[stream].run for stream in job.streams}
                return score_video(job, scorers, self.labels, self.batch_sizes, self._progress)
            finally:
                self._last_progress = None

    def idle_seconds(self) -> float:
        """Seconds since the video being scored last made progress (0 when idle)."""
        last = self._last_progress
        return 0.0 if last is None else time.monotonic() - last

    def providers(self) -> list[str]:
        """The onnxruntime providers this actor scores on; answering also says it is ready."""
        return self.models["video"].providers


@dataclass
class _Running:
    """A video on an actor."""

    job: VideoJob
    actor: object  # ray.actor.ActorHandle
    attempt: int  # 0 first; 1 after an actor died under it
    answered: float = field(default_factory=time.monotonic)  # when its actor last answered a health check


class RayExecutor(Executor):
    """A pool of `workers` ScoringActors on the cluster at `address` (a new local one when None)."""

    def __init__(self, models, batch_sizes, workers, timeout, address: str | None = None, device: str = "auto"):
        super().__init__(models, batch_sizes, workers, timeout)
        try:
            import ray
        except ImportError:
            raise UsageError("--executor ray needs Ray: pip install 'tagger[ray]'") from None
        self.ray = ray
        self.started_ray = False
        if address:
            _check_reachable(address)
        if not ray.is_initialized():  # else this process is connected already (a library caller's ray.init)
            self._connect(address)
        _silence_raylet_messages()
        resources = ray.cluster_resources()
        cpus, gpus = int(resources.get("CPU", 1)), float(resources.get("GPU", 0))
        if device == "cuda" and not gpus:
            raise ModelError("CUDA was asked for but the Ray cluster has no GPUs: use --device cpu or add GPU nodes")
        self.actors = workers or max(1, cpus)
        gpu_share = min(1.0, gpus / self.actors) if gpus and device != "cpu" else 0.0
        self.actor_class = ray.remote(num_cpus=1, num_gpus=gpu_share, max_concurrency=2, max_restarts=0,
                                      max_task_retries=0)(ScoringActor)
        files = {stream: (model.path.name, model.path.read_bytes()) for stream, model in self.models.items()}
        self.model_files = ray.put(files)
        self.actor_device = "cuda" if gpu_share else "cpu"
        self._pool: list = []
        self._starting: dict = {}
        self._providers = [CPU]
        self._nodes = _alive_nodes(ray)  # to tell, when actors die, whether their node went too
        self._workers_lost = self._retried = 0

    def _connect(self, address: str | None) -> None:
        options = dict(log_to_driver=False, logging_level="ERROR")
        _check_reachable(address or os.environ.get("RAY_ADDRESS"))
        on_sigterm = signal.getsignal(signal.SIGTERM)  # ray.init replaces it with an abrupt exit
        try:
            if address:
                self.ray.init(address=address, **options)
            else:  # RAY_ADDRESS when set, else a new local Ray on this machine's cores
                from tagger.config import usable_cores

                if os.environ.get("RAY_ADDRESS"):
                    self.ray.init(**options)
                else:
                    self.ray.init(num_cpus=usable_cores(), include_dashboard=False, **options)
                    self.started_ray = True
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = address or os.environ.get("RAY_ADDRESS") or "a local Ray"
            raise UsageError(f"cannot reach the Ray cluster at {where} ({_first(exc).rstrip('.')}): start it with "
                             "`ray start --head`, or fix --ray-address") from None
        finally:
            if on_sigterm is not None and threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, on_sigterm)

    @property
    def providers(self) -> list[str]:
        return self._providers

    @property
    def recoveries(self) -> Recoveries:
        """Actors that died under a video, the nodes of the cluster gone since the scan began (once
        Ray has noticed), and the videos run once more."""
        gone = len(self._nodes - _alive_nodes(self.ray)) if self._workers_lost else 0
        return Recoveries(self._workers_lost, gone, self._retried)

    def outcomes(self, jobs: JobQueue) -> Iterator[Started | Outcome]:
        ray = self.ray
        self._starting: dict = {}  # the readiness call (providers) of each actor not yet ready -> actor
        for _ in range(max(1, min(self.actors, len(jobs)))):
            self._start_actor()
        idle: list = []
        running: dict = {}  # ObjectRef of score() -> _Running
        retry: deque[VideoJob] = deque()  # videos whose actor died under them, to run once more
        queue = iter(jobs)
        exhausted = False
        checked = last_event = time.monotonic()
        while True:
            while idle and (retry or not exhausted):
                if retry:
                    job, attempt = retry.popleft(), 1
                else:
                    job = next(queue, None)
                    if job is None:
                        exhausted = True
                        break
                    job, attempt = replace(job, threads=1), 0  # an actor decodes on its one CPU
                    yield Started(job)
                actor = idle.pop()
                running[actor.score.remote(job)] = _Running(job, actor, attempt)
            if not running and not retry and exhausted:
                return
            if not running and not idle:
                self._check_room(time.monotonic() - last_event)
            done, _ = ray.wait([*running, *self._starting], num_returns=1, timeout=HEALTH_EVERY)
            for ref in done:
                last_event = time.monotonic()
                if ref in self._starting:
                    actor = self._starting.pop(ref)
                    if self._ready(ref, actor, others=bool(idle or running or self._starting)):
                        idle.append(actor)
                    continue
                run = running.pop(ref)
                try:
                    outcome = ray.get(ref)
                except ray.exceptions.RayActorError as exc:
                    self._retire(run.actor)
                    self._start_actor()
                    self._workers_lost += 1
                    if run.attempt == 0:  # its node or process may have died for reasons of its own
                        retry.append(run.job)
                        self._retried += 1
                    else:
                        yield VideoFailure(run.job.path, f"crash: two Ray workers died on this video ({_first(exc)})")
                    continue
                except ray.exceptions.RayTaskError as exc:
                    raise exc.as_instanceof_cause() from None  # a model error: the scan cannot go on
                idle.append(run.actor)
                yield outcome
            if time.monotonic() - checked >= HEALTH_EVERY:
                checked = time.monotonic()
                for ref, run in self._stalled(running):
                    del running[ref]
                    self._retire(run.actor)
                    self._start_actor()
                    yield VideoFailure(run.job.path, f"timeout: the Ray worker made no progress for {self.timeout:g} s "
                                                     "(killed)")

    def _start_actor(self) -> None:
        """A new actor; it takes work once it has loaded the models (see _ready)."""
        actor = self.actor_class.remote(self.model_files, self.actor_device, 1, self.batch_size)
        self._pool.append(actor)
        self._starting[actor.providers.remote()] = actor

    def _ready(self, ref, actor, others: bool) -> bool:
        """Whether a starting actor loaded the models. One that could not is dropped; if none
        could, the scan cannot go on."""
        try:
            self._providers = self.ray.get(ref)
            return True
        except self.ray.exceptions.RayActorError as exc:
            self._retire(actor)
            if not others:
                raise ModelError(f"the Ray actors could not load the models: {_first(exc)}") from None
            return False

    def _check_room(self, waited: float) -> None:
        """With videos left and no actor ready, wait for the starting ones, but not for ever: a
        cluster that lost nodes may have no room left for them."""
        if waited > max(STARTUP, self.timeout):
            raise UsageError(f"no Ray actor could start for {waited:.0f} s: the cluster has no room left for "
                             "tagger's actors (1 CPU each); add nodes or lower --workers")

    def _stalled(self, running: dict) -> list:
        """The runs whose actor says it has made no progress for `timeout` seconds, or has not
        answered for that long (a node gone quiet, a decoder holding the interpreter)."""
        ray = self.ray
        now = time.monotonic()
        asks = {run.actor.idle_seconds.remote(): ref for ref, run in running.items()}
        answered, _ = ray.wait(list(asks), num_returns=len(asks), timeout=ANSWER_WITHIN)
        stalled = []
        for ask, ref in asks.items():
            run = running[ref]
            if ask in answered:
                try:
                    idle_for = ray.get(ask)
                except ray.exceptions.RayActorError:
                    continue  # it died: ray.wait reports it with its result
                run.answered = now
            else:
                idle_for = now - run.answered
            if idle_for > self.timeout:
                stalled.append((ref, run))
        return stalled

    def _retire(self, actor) -> None:
        self.ray.kill(actor, no_restart=True)
        self._pool = [a for a in self._pool if a is not actor]

    def close(self) -> None:
        for actor in self._pool:
            self.ray.kill(actor, no_restart=True)
        self._pool = []
        if self.started_ray:
            self.ray.shutdown()


def _alive_nodes(ray) -> set[str]:
    """The ids of the cluster's nodes Ray counts as alive."""
    return {node["NodeID"] for node in ray.nodes() if node.get("Alive")}


def _check_reachable(address: str | None) -> None:
    """UsageError unless something listens at a HOST:PORT Ray address: ray.init would otherwise
    retry an unreachable one for minutes. "auto" and an unset address are Ray's to resolve."""
    if not address or address in ("auto", "local"):
        return
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not port.isdigit():
        raise UsageError(f"--ray-address {address!r} is not HOST:PORT, ray://HOST:PORT or auto")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
    except OSError as exc:
        raise UsageError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}): start it with "
                         "`ray start --head`, or fix --ray-address") from None


def _silence_raylet_messages() -> None:
    """Keep the Ray driver from printing the raylet's error messages ("A worker died ...", a
    paragraph each) to standard output, where they would break `--json` and the progress display:
    the scan reports each affected video with its reason instead. Ray has no option for this, so its
    printer is wrapped; if a Ray release moves it, the messages simply show again."""
    try:
        from ray._private import worker
    except ImportError:
        return
    printer = getattr(worker, "print_to_stdstream", None)
    if printer is None or getattr(printer, "tagger_quiet", False):
        return

    def quiet(data, *args, **kwargs):
        if data.get("pid") != "raylet":
            printer(data, *args, **kwargs)

    quiet.tagger_quiet = True
    worker.print_to_stdstream = quiet


def _first(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
