"""The shipped default model: its ImageNet mapping, its export, its metadata, and what it tags.

What it tags on the real clips is asserted by tests/test_default_scan.py (a real scan, every segment
compared with tests/golden/shared_clips.json); here: its metadata, its card, and that its `features`
output is what it says and leaves its scores alone. Nothing here downloads anything.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from tagger.model import default_model_path, load_model
from training.imagenet_map import (BACKGROUND, IMAGENET_CLASSES, INSTRUMENT_TAGS, TIERS,
                                   class_to_tag_matrix, labels)

ROOT = Path(__file__).resolve().parents[1]
MAX_MB = 25.0  # the limit for the shipped model
GUITAR_CLIPS = ("v_PlayingGuitar_g16_c02.avi", "vta-ldm__0DCit2EBtjs_000030.mp4")
CELLO_CLIPS = ("v_PlayingCello_g05_c01.avi", "maskvat.github.io__cello.mp4")


@pytest.fixture(scope="module")
def shipped():
    """The shipped default model, opened the way `tagger scan` opens it."""
    return load_model(None, device="cpu")


def test_mapping_table_covers_every_label_with_unique_valid_indices():
    indices = [index for row in INSTRUMENT_TAGS for index, _name in row.classes]
    assert all(0 <= index < IMAGENET_CLASSES for index in indices)
    assert len(indices) == len(set(indices)), "an ImageNet class may count for one tag only"
    assert all(name for row in INSTRUMENT_TAGS for _index, name in row.classes)
    assert all(row.tier in TIERS and row.classes for row in INSTRUMENT_TAGS)
    assert labels() == (*[row.tag for row in INSTRUMENT_TAGS], BACKGROUND)
    assert len(set(labels())) == len(labels())
    matrix = np.array(class_to_tag_matrix())
    assert matrix.shape == (IMAGENET_CLASSES, len(INSTRUMENT_TAGS))
    assert matrix.sum() == len(indices) and matrix.sum(axis=1).max() == 1
    # The anchors the issue names, checked against the ImageNet-1k class list.
    by_tag = {row.tag: dict(row.classes) for row in INSTRUMENT_TAGS}
    assert by_tag["PlayingGuitar"][402] == "acoustic guitar" and 546 in by_tag["PlayingGuitar"]
    assert set(by_tag["PlayingPiano"]) == {579, 881}
    assert 889 in by_tag["PlayingViolin"] and 486 in by_tag["PlayingCello"]
    assert 558 in by_tag["PlayingFlute"] and 541 in by_tag["Drumming"]


def test_backbone_matches_the_shipped_weights_exactly():
    torch = pytest.importorskip("torch")
    from training.pretrained import lite0_weights_path, load_lite0

    state = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    model = load_lite0()  # strict: every key and shape of the .pth, nothing more
    assert set(model.state_dict()) == set(state)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


@pytest.mark.parametrize("variant, parameters", [("lite0", 4_652_008), ("lite1", 5_416_680), ("lite2", 6_092_072)])
def test_lite_variants_have_the_shapes_of_their_wheels(variant, parameters):
    """Lite1 and Lite2 were compared as backbones: their stage scaling must rebuild the wheels'
    networks (these counts are what the strict loads of the three wheels' .pth files gave)."""
    pytest.importorskip("torch")
    from training.pretrained import EfficientNetLite0

    assert sum(p.numel() for p in EfficientNetLite0(variant=variant).parameters()) == parameters


@pytest.mark.parametrize("temporal", ["gru", "attention", "mean"])
def test_efficientnet_arch_builds_from_the_registry_and_classifies_clips(temporal):
    torch = pytest.importorskip("torch")
    from training.models import build_model

    model = build_model("efficientnet", {"num_classes": 5, "temporal": temporal, "pretrained": False})
    clips = torch.randn(2, 3, 4, 64, 64)  # (N, 3, T, H, W)
    assert model(clips).shape == (2, 5)


def test_shipped_model_metadata_says_what_it_sees_and_what_it_leaves_out(shipped):
    # v2 ships: the v3 candidate (training/build_default.py) failed the gate against it (bench/eval_default_v3.json)
    contract = shipped.contract
    assert contract.output == "probs" and contract.kind == "video" and contract.background == "NoInstrument"
    assert contract.arch == "efficientnet-lite0-crop-head" and contract.version == "2"
    assert contract.crops == 3 and contract.resize == 224 and contract.whole_frame == 0
    assert contract.clip_len == 4 and contract.window_seconds == pytest.approx(4.0)
    assert {"PlayingSitar", "PlayingTabla", "PlayingGuitar", "Drumming", "PlayingCello"} <= set(contract.tag_labels)
    assert all(0.5 <= contract.threshold_for(tag) <= 0.9 for tag in contract.tag_labels)
    assert {"PlayingDaf", "PlayingDhol", "PlayingOboe", "PlayingBassoon"} <= set(contract.left_out)
    assert 0 <= contract.fusion_support <= 1
    assert shipped.features and contract.feature_dim == 1298 and "head" not in contract.extra


def _graph_with(outputs: dict[str, int], tmp_path: Path, drop_features: bool = False) -> "object":
    """The shipped graph with extra outputs (name -> width) or without its `features` output."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(default_model_path()))
    if drop_features:
        kept = [o for o in model.graph.output if o.name != "features"]
        del model.graph.output[:]
        model.graph.output.extend(kept)
    for name, width in outputs.items():
        model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, ["M", width]))
    path = tmp_path / f"graph-{len(outputs)}-{drop_features}.onnx"
    onnx.save(model, str(path))
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_the_shipped_features_are_the_window_s_mean_standardised_head_input(shipped, shared_data, tmp_path):
    """`features` (python -m training.expose_features): per window, the head's input of every crop of
    every frame ((x - mean) * inv_std of pooled Lite0 features and log priors), averaged."""
    from onnx import numpy_helper
    import onnx

    from tagger.step import VideoJob, window_inputs

    init = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(default_model_path())).graph.initializer}
    session = _graph_with({"/model/head/Concat_output_0": 1298}, tmp_path)
    for clip in ("moviepy__fire2.mp4", GUITAR_CLIPS[0], "maskvat.github.io__violin.mp4"):
        windows = window_inputs(VideoJob.for_model(shipped.contract, shared_data / "clips" / clip))
        raw, features = session.run(["/model/head/Concat_output_0", "features"], {"frames": windows})
        standardised = (raw - init["model.head.mean"]) * init["model.head.inv_std"]  # (N * 4 frames * 3 crops, D)
        expected = standardised.reshape(len(windows), 12, -1).mean(axis=1)
        assert features.shape == (len(windows), 1298) and np.allclose(features, expected, atol=1e-4), clip


def test_the_features_output_leaves_the_shipped_scores_as_they_were(shipped, shared_data, tmp_path):
    from tagger.step import VideoJob, window_inputs

    without = _graph_with({}, tmp_path, drop_features=True)
    windows = window_inputs(VideoJob.for_model(shipped.contract, shared_data / "clips" / CELLO_CLIPS[1]))
    assert [o.name for o in without.get_outputs()] == ["probs"]
    assert np.array_equal(without.run(["probs"], {"frames": windows})[0], shipped.run(windows).scores)


def test_shipped_model_is_small_and_its_card_describes_this_file(shipped):
    path = default_model_path()
    assert path.stat().st_size / 1e6 < MAX_MB
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() and card["bytes"] == path.stat().st_size
    assert card["thresholds"] == {k: shipped.contract.threshold_for(k) for k in card["thresholds"]}
    assert card["features"]["dim"] == shipped.contract.feature_dim
    gate = card["gate"]  # held-out real videos, per label, beside the default it replaced; measured when it shipped
    assert gate["passed"] is True and gate["against"] == "v2.onnx" and "real videos" in gate["held_out"]
    new, old = gate["test_split"]["new"], gate["test_split"]["previous"]
    assert new["videos"] == old["videos"] >= 150 and set(new["labels"]) == set(old["labels"])
    assert all({"videos", "tagged", "wrong"} <= set(row) for row in new["labels"].values())
    assert card["measured"]["scan_speed"]["speed_x"] > 0 and "bench/scan_speed.py" in card["measured"]["scan_speed"]["summary"]


def test_backbone_recognises_an_acoustic_guitar_in_a_real_frame(shared_data):
    torch = pytest.importorskip("torch")
    from tagger.decode import centre_crop, open_video
    from training.pretrained import LITE0_MEAN, LITE0_STD, load_lite0

    source = open_video(str(shared_data / "clips" / GUITAR_CLIPS[0]), 224)
    frames = np.stack([centre_crop(f, (224, 224)) for _, f in source.read([25, 125, 225])])
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255  # (3, 3, 224, 224)
    x = (x - torch.tensor(LITE0_MEAN).view(1, 3, 1, 1)) / torch.tensor(LITE0_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        probs = load_lite0()(x).softmax(dim=1).mean(dim=0)
    assert 402 in probs.topk(3).indices.tolist()  # ImageNet 402: acoustic guitar
