"""training.models, training.checkpoint and training.export on small, untrained models (fast).

The trained end-to-end checks (motion learning, export parity on held-out videos, resume) are in
test_training_fit.py.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from tagger.contract import ModelContract
from tagger.errors import ModelError, UsageError
from training.checkpoint import (
    contract_from_checkpoint,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from training.export import UInt8VideoInput, export_video_model
from training.models import (
    ARCHS,
    C3D,
    VC3D,
    VideoModelConfig,
    build_model,
    count_parameters,
    register_arch,
)


def _linears(model: nn.Module) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear)]


def test_c3d_has_the_papers_layers():
    model = build_model("c3d", {"num_classes": 101})
    convs = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv3d)]
    assert convs == [64, 128, 256, 256, 512, 512, 512, 512]  # conv1a .. conv5b
    assert _linears(model) == [(8192, 4096), (4096, 4096), (4096, 101)]  # 512x1x4x4 -> fc6-fc8
    assert count_parameters(model) == 78_409_573  # the paper's C3D with 101 outputs


def test_vc3d_flattens_to_5120():
    model = build_model("vc3d", {"num_classes": 10}).eval()
    assert _linears(model) == [(5120, 1280), (1280, 640), (640, 10)]
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 16, 120, 120)).shape == (1, 10)
    assert sum(isinstance(m, nn.BatchNorm3d) for m in model.modules()) == 4


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_no_ceil_mode_pooling_anywhere(arch):
    if arch not in ("c3d", "vc3d", "framemean"):
        pytest.skip(f"{arch} is registered by another module")
    model = build_model(arch, {"num_classes": 3})
    pools = [m for m in model.modules() if isinstance(m, (nn.MaxPool3d, nn.MaxPool2d))]
    assert pools and not any(p.ceil_mode for p in pools)


def test_width_multiplier_shrinks_c3d_and_keeps_the_paper_input():
    small = build_model("c3d", {"num_classes": 5, "width": 0.25}).eval()
    assert count_parameters(small) * 4 < 25e6  # exports under 25 MB
    with torch.no_grad():
        assert small(torch.zeros(2, 3, 16, 112, 112)).shape == (2, 5)


def test_c3d_adapts_pooling_to_small_clips():
    model = build_model("c3d", {"num_classes": 2, "width": 0.125, "clip_len": 8,
                                "size": [48, 48], "resize": 56}).eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 8, 48, 48)).shape == (1, 2)


def test_unknown_arch_and_option_name_the_choices():
    with pytest.raises(UsageError, match="unknown --arch 'resnet': choose one of .*c3d.*vc3d"):
        build_model("resnet", {})
    with pytest.raises(UsageError, match="--arch framemean has no option 'dropout'"):
        build_model("framemean", {"dropout": 0.3})


@dataclass(frozen=True)
class TinyConfig(VideoModelConfig):
    """Config of a throwaway arch registered by a test."""

    hidden: int = 3  # test-only


class Tiny(nn.Module):
    """Mean colour -> linear: the smallest thing `register_arch` accepts."""

    def __init__(self, config: TinyConfig) -> None:
        super().__init__()
        self.config = config
        self.fc = nn.Linear(3, config.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean(dim=(2, 3, 4)))


def test_register_arch_reads_the_config_class_from_the_annotation():
    register_arch("tiny-test", Tiny)
    try:
        model = build_model("tiny-test", {"num_classes": 4, "hidden": 7})
        assert isinstance(model.config, TinyConfig) and model.config.hidden == 7
    finally:
        del ARCHS["tiny-test"]


def test_register_arch_without_a_config_class_says_what_to_pass():
    with pytest.raises(TypeError, match="pass config_cls"):
        register_arch("untyped-test", lambda config: Tiny(config))
    assert "untyped-test" not in ARCHS


def _checkpoint_state(model: nn.Module, arch: str, tmp_path: Path) -> dict:
    return {
        "arch": arch, "model_config": dataclasses.asdict(model.config), "model": model.state_dict(),
        "labels": ["MovingLeft", "MovingRight"], "epoch": 3,
        "clip": {"clip_len": 16, "size": (56, 56), "resize": 64, "fps": 10.0, "frame_step": 1},
        "data": {"root": str(tmp_path / "data")},
        "split": {"method": "group", "train": [], "val": []},
        "best": {"epoch": 2, "val_accuracy": 0.5}, "history": [],
    }


def test_checkpoint_round_trip_with_weights_only(tmp_path):
    torch.manual_seed(0)
    model = build_model("c3d", {"num_classes": 2, "width": 0.125, "size": (56, 56),
                                "resize": 64}).eval()
    save_checkpoint(tmp_path / "best.pt", _checkpoint_state(model, "c3d", tmp_path))
    raw = torch.load(tmp_path / "best.pt", weights_only=True)  # no pickled code needed
    rebuilt, config = model_from_checkpoint(raw)
    assert isinstance(rebuilt, C3D) and config == model.config
    clip = torch.randn(2, 3, 16, 56, 56)
    with torch.no_grad():
        assert torch.equal(rebuilt(clip), model(clip))
    contract = contract_from_checkpoint(load_checkpoint(tmp_path / "best.pt"))
    assert contract.labels == ("MovingLeft", "MovingRight") and contract.size == (56, 56)
    assert contract.window_seconds == pytest.approx(1.6)


def test_loading_something_else_is_a_usage_error(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UsageError, match="cannot be read"):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(UsageError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def _contract(**changes) -> ModelContract:
    values = {"labels": ("A", "B", "C"), "clip_len": 8, "size": (32, 32), "resize": 40,
              "fps": 10.0, "frame_step": 1, "thresholds": {"A": 0.5, "B": 0.5, "C": 0.5},
              "arch": "vc3d"}
    return ModelContract(**{**values, **changes})


@pytest.mark.parametrize("output", ["logits", "probs"])
def test_export_video_model_checks_itself_and_describes_itself(tmp_path, output):
    torch.manual_seed(0)
    model = VC3D(build_model("vc3d", {"num_classes": 3, "clip_len": 8, "size": (32, 32),
                                      "resize": 40, "width": 0.125}).config).eval()
    frames = np.random.default_rng(1).integers(0, 256, (3, 8, 32, 32, 3), dtype=np.uint8)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    report = export_video_model(model, _contract(output=output), tmp_path / "m.onnx", mean=mean,
                                std=std, parity_frames=frames, card={"epochs": 3})
    graph = onnx.load(str(tmp_path / "m.onnx"))
    onnx.checker.check_model(graph)
    contract = ModelContract.from_metadata({p.key: p.value for p in graph.metadata_props})
    assert contract.output == output and contract.labels == ("A", "B", "C")
    assert contract.train["epochs"] == 3 and contract.train["parity_input"] == "real"
    assert contract.train["parity_max_abs_diff"] == report["train"]["parity_max_abs_diff"] < 1e-4
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["frames"]
    assert [o.name for o in session.get_outputs()] == [output]
    many = np.concatenate([frames] * 3)  # N is dynamic
    got = session.run(None, {"frames": many})[0]
    # Reference: normalise by hand, outside any wrapper.
    x = (torch.from_numpy(many).float() / 255 - torch.tensor(mean)) / torch.tensor(std)
    with torch.no_grad():
        expected = model(x.permute(0, 4, 1, 2, 3))
    if output == "probs":
        expected = torch.softmax(expected, 1)
        assert np.allclose(got.sum(1), 1, atol=1e-5)
    assert np.abs(got - expected.numpy()).max() < 1e-4
    assert (tmp_path / "m.json").is_file() and report["bytes"] == (tmp_path / "m.onnx").stat().st_size


def test_export_refuses_a_label_count_mismatch_and_oversized_models(tmp_path):
    model = build_model("framemean", {"num_classes": 2, "clip_len": 8, "size": (32, 32),
                                      "resize": 40})
    with pytest.raises(ModelError, match="model gives 2 scores but the contract has 3 labels"):
        export_video_model(model, _contract(), tmp_path / "m.onnx", mean=(0.5,) * 3,
                           std=(0.5,) * 3)
    with pytest.raises(ModelError, match="over the 0.01 MB limit"):
        export_video_model(model, _contract(labels=("A", "B"), thresholds={}), tmp_path / "m.onnx",
                           mean=(0.5,) * 3, std=(0.5,) * 3, max_mb=0.01)
    assert not (tmp_path / "m.onnx").exists()


def test_export_refuses_a_graph_the_simplifier_got_wrong(tmp_path, monkeypatch):
    import onnxsim
    from onnx import numpy_helper

    real = onnxsim.simplify

    def wrong_rewrite(graph, *args, **kwargs):  # a simplifier bug: one weight tensor comes out tripled
        simplified, ok = real(graph, *args, **kwargs)
        weights = max(simplified.graph.initializer, key=lambda t: int(np.prod(t.dims)))
        weights.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weights) * 3, weights.name))
        return simplified, ok

    monkeypatch.setattr(onnxsim, "simplify", wrong_rewrite)
    torch.manual_seed(0)
    model = VC3D(build_model("vc3d", {"num_classes": 3, "clip_len": 8, "size": (32, 32),
                                      "resize": 40, "width": 0.125}).config).eval()
    frames = np.random.default_rng(1).integers(0, 256, (3, 8, 32, 32, 3), dtype=np.uint8)
    with pytest.raises(ModelError, match="onnxruntime and torch disagree"):
        export_video_model(model, _contract(), tmp_path / "m.onnx", mean=(0.5,) * 3, std=(0.25,) * 3,
                           parity_frames=frames)
    assert list(tmp_path.iterdir()) == []  # nothing written, not even the temporary file


def test_uint8_wrapper_matches_manual_normalisation():
    inner = nn.Identity()
    wrapper = UInt8VideoInput(inner, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    frames = torch.arange(256, dtype=torch.uint8).repeat(3).reshape(2, 4, 4, 8, 3)  # every value 0..255
    out = wrapper(frames)  # (N, 3, T, H, W)
    assert out.shape == (2, 3, 4, 4, 8)
    # One multiply-add in the graph: equal to (x / 255 - mean) / std up to float32 rounding.
    assert torch.allclose(out[:, 1], (frames[..., 1].float() / 255 - 0.5) / 0.25, rtol=0, atol=1e-6)
