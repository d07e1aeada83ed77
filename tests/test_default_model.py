"""The shipped default model: its ImageNet mapping, its export, its metadata, and what it tags.

What it tags on the real clips is asserted by tests/test_default_scan.py (a real scan, every segment
compared with tests/golden/shared_clips.json); here: its metadata, its card, and that the graph,
its recorded head and the training arithmetic agree on real windows. Nothing here downloads anything.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
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


def _load_bench(name: str):
    """Import bench/NAME.py (bench/ is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


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
    contract = shipped.contract
    assert contract.output == "probs" and contract.kind == "video" and contract.background is None
    assert contract.arch == "lite0-wholeframe-linear" and contract.version == "3"
    assert contract.whole_frame == 32 and contract.resize == 224 and contract.crops == 1
    assert contract.clip_len == 4 and contract.window_seconds == pytest.approx(4.0)
    assert {"PlayingSitar", "PlayingTabla", "PlayingGuitar", "Drumming", "PlayingBassoon", "PlayingOboe",
            "PlayingMarimba"} <= set(contract.tag_labels)
    assert all(0.5 <= contract.threshold_for(tag) <= 0.9 for tag in contract.tag_labels)
    assert {"PlayingDaf", "PlayingDhol"} <= set(contract.left_out)
    assert 0 <= contract.fusion_support <= 1 and contract.extra["audio_model"] == "default_audio.onnx"
    assert contract.feature_dim == 274 and contract.extra["features"]["space"].startswith("lite0-v3-")


def test_the_shipped_head_on_stored_features_gives_the_scan_s_scores(shipped, shared_data):
    """`tagger.head` is the graph's own head: applied to the features a scan stores (float16), it gives
    the scores the scan stores, so a later default with the same backbone can re-score old scans."""
    from tagger.heads import Head
    from tagger.step import VideoJob, window_inputs

    head = Head.of_model(shipped.contract)
    windows = window_inputs(VideoJob.for_model(shipped.contract, shared_data / "clips" / GUITAR_CLIPS[0]))
    scored = shipped.run(windows)
    assert scored.features.shape == (len(windows), 274)
    assert np.abs(head.scores(scored.features.astype(np.float16)) - scored.scores).max() < 0.02
    assert np.abs(head.scores(scored.features) - scored.scores).max() < 1e-5


def test_the_shipped_graph_computes_features_as_training_does(shared_data, tmp_path):
    """The head was fitted on `features_from_parts` of the parts the graph's backbone half gives: the
    shipped graph's own `parts`, put through that numpy arithmetic, are its `features`."""
    pytest.importorskip("torch")
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    from tagger.step import VideoJob, window_inputs
    from training.assemble import features_from_parts
    from training.frame_net import Projection

    model = onnx.load(str(default_model_path()))
    init = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    projection = Projection(init["head_mean"], init["head_projection"])
    model.graph.output.append(onnx.helper.make_tensor_value_info("parts", onnx.TensorProto.FLOAT, ["N", 2578]))
    onnx.save(model, str(tmp_path / "with_parts.onnx"))
    session = ort.InferenceSession(str(tmp_path / "with_parts.onnx"), providers=["CPUExecutionProvider"])
    contract = load_model(None, device="cpu").contract
    for clip in ("moviepy__fire2.mp4", "v_Typing_g01_c01.avi", "maskvat.github.io__violin.mp4"):
        windows = window_inputs(VideoJob.for_model(contract, shared_data / "clips" / clip))
        parts, features = session.run(["parts", "features"], {"frames": windows})
        assert np.allclose(features_from_parts(parts, projection), features, atol=1e-4), clip


def test_shipped_models_are_small_and_the_card_describes_them(shipped):
    path = default_model_path()
    audio = path.with_name("default_audio.onnx")
    assert path.stat().st_size / 1e6 < MAX_MB and audio.stat().st_size / 1e6 < MAX_MB
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert card["audio_sha256"] == hashlib.sha256(audio.read_bytes()).hexdigest()
    assert card["thresholds"] == {k: shipped.contract.threshold_for(k) for k in card["thresholds"]}
    measured = card["measured"]  # held-out videos and photos, separately; the gate's result
    assert measured["out_of_fold_fused"]["instrument_videos"] >= 150
    assert measured["test_split_videos_fused"]["instrument_videos"] >= 50
    assert measured["test_split_photos"]["instrument_videos"] >= 50
    assert card["gate"]["passed"] is True


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
