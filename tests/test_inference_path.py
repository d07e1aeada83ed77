"""How a loaded model is run: onnxruntime IO binding (what CUDA sessions use) and the batch size
measured on the session's device. A CUDA machine checks the same on its GPU with bench/gpu_check.py;
here the CPU provider runs the same binding code.
"""

from __future__ import annotations

import numpy as np
import pytest

from synthetic import write_colour_model
from tagger.model import CPU, CUDA, LoadedModel, choose_batch, load_model, measure_batch_size


class _Session:
    """An onnxruntime session seen through a wrapper: other providers named, or a failure from
    `fails_from` rows on (what an out-of-memory device does)."""

    def __init__(self, session, providers=None, fails_from: int | None = None):
        self.inner, self.names, self.fails_from, self.calls = session, providers, fails_from, []

    def get_providers(self):
        return self.names or self.inner.get_providers()

    def run(self, names, feeds):
        rows = len(next(iter(feeds.values())))
        self.calls.append(rows)
        if self.fails_from is not None and rows >= self.fails_from:
            raise RuntimeError("Failed to allocate memory for requested buffer")
        return self.inner.run(names, feeds)


def _wrapped(model: LoadedModel, **how) -> LoadedModel:
    return LoadedModel(model.path, model.sha256, model.contract, _Session(model.session, **how),
                       model.output_name, model.features)


@pytest.fixture(scope="module")
def default_model():
    return load_model(None, device="cpu")


def test_io_binding_gives_exactly_what_a_plain_run_gives_on_real_windows(default_model, shared_data):
    from tagger.step import VideoJob, window_inputs

    assert not default_model.io_binding  # a CPU session runs plainly unless asked
    windows = np.concatenate([window_inputs(VideoJob.for_model(default_model.contract, shared_data / "clips" / clip))
                              for clip in ("moviepy__fire2.mp4", "v_PlayingGuitar_g16_c02.avi")])
    plain = default_model.run(windows[:3])
    default_model.io_binding = True
    try:
        bound = default_model.run(windows[:3])
        bound_scores = default_model.scores(windows[:3])
    finally:
        default_model.io_binding = False
    assert plain.features is not None and bound.features.shape == plain.features.shape == (3, 1298)
    assert np.array_equal(bound.scores, plain.scores) and np.array_equal(bound.features, plain.features)
    assert np.array_equal(bound_scores, plain.scores)


def test_io_binding_takes_a_whole_frame_model_s_frames_of_any_size(tmp_path):
    model = load_model(write_colour_model(tmp_path / "whole.onnx", whole_frame=32, features=True), "cpu")
    frames = model.sample_input(2)
    assert frames.shape == (2, 4, 32, 32 * 16 // 9 // 32 * 32, 3) and frames.dtype == np.uint8
    model.io_binding = True
    bound = model.run(frames)
    model.io_binding = False
    plain = model.run(frames)
    assert np.allclose(bound.scores, frames.mean(axis=(1, 2, 3)) / 255, atol=1e-5)
    assert np.array_equal(bound.scores, plain.scores) and np.array_equal(bound.features, plain.features)


def test_the_smallest_batch_within_five_percent_of_the_best_is_chosen():
    assert choose_batch({1: 10.0, 2: 19.0, 4: 30.0, 8: 31.0, 16: 29.0}) == 4  # 30 >= 0.95 * 31
    assert choose_batch({1: 10.0, 2: 19.0, 4: 25.0, 8: 31.0}) == 8
    assert choose_batch({1: 12.0}) == 1


def test_measuring_times_each_size_on_the_real_model(default_model):
    session = _Session(default_model.session)
    model = _wrapped(default_model)
    model.session = session
    measured = measure_batch_size(model, candidates=(1, 2), seconds=0.0)
    assert sorted(measured.rates) == [1, 2] and all(rate > 0 for rate in measured.rates.values())
    assert measured.chosen in (1, 2) and measured.chosen == choose_batch(measured.rates)
    assert session.calls == [1, 1, 1, 2, 2, 2]  # one untimed call, then two timed, at each size
    assert measured.describe().startswith(f"batch {measured.chosen} (measured: 1: ")


def test_measuring_stops_at_the_size_the_device_cannot_hold(default_model):
    model = _wrapped(default_model, fails_from=4)
    measured = measure_batch_size(model, candidates=(1, 2, 4, 8), seconds=0.0)
    assert sorted(measured.rates) == [1, 2]
    assert max(model.session.calls) == 4  # 8 was never tried
    with pytest.raises(RuntimeError, match="allocate"):  # not even one window fits: say so, not batch 0
        measure_batch_size(_wrapped(default_model, fails_from=1), candidates=(1, 2), seconds=0.0)


def test_auto_batch_is_measured_once_on_cuda_and_fixed_on_a_cpu(default_model, tmp_path):
    assert default_model.auto_batch_size() == 1  # 16 input frames // (4 frames x 3 crops)
    assert default_model.measured is None
    small = load_model(write_colour_model(tmp_path / "colour.onnx"), "cpu")  # every size is quick to time
    on_cuda = _wrapped(small, providers=[CUDA, CPU])
    chosen = on_cuda.auto_batch_size()
    assert on_cuda.measured is not None and chosen == on_cuda.measured.chosen
    calls = len(on_cuda.session.calls)
    assert on_cuda.auto_batch_size() == chosen and len(on_cuda.session.calls) == calls  # not measured again
