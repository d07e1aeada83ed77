"""The shipped default model: its ImageNet mapping, its export, its metadata, and what it tags.

The tagging tests run the shipped `exports/default.onnx` with onnxruntime through the tagger's own
decoding (`bench/eval_default.py`), on the real clips in ../shared/data; they skip where that
folder is absent. Nothing here downloads anything.
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


@pytest.fixture(scope="module")
def shared_results(shipped, shared_data):
    """Every shared clip tagged by the shipped model: {clip name: VideoResult}."""
    evaluator = _load_bench("eval_default")
    results, _summary = evaluator.evaluate(shipped, evaluator.manifest_videos(shared_data), echo=False)
    return {Path(r.path).name: r for r in results}


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


@pytest.mark.parametrize("temporal", ["gru", "attention", "mean"])
def test_efficientnet_arch_builds_from_the_registry_and_classifies_clips(temporal):
    torch = pytest.importorskip("torch")
    from training.models import build_model

    model = build_model("efficientnet", {"num_classes": 5, "temporal": temporal, "pretrained": False})
    clips = torch.randn(2, 3, 4, 64, 64)  # (N, 3, T, H, W)
    assert model(clips).shape == (2, 5)


def test_shipped_model_metadata_parses_and_matches_the_table(shipped):
    contract = shipped.contract
    assert contract.labels == labels()
    assert contract.background == BACKGROUND and contract.output == "probs"
    assert contract.kind == "video" and contract.arch == "efficientnet-lite0-imagenet-map"
    assert set(contract.thresholds) == set(contract.tag_labels)
    assert all(0 < t < 1 for t in contract.thresholds.values())
    assert contract.size == (224, 224) and contract.resize >= 224
    assert contract.clip_len == 8 and contract.window_seconds == pytest.approx(4.0)
    assert contract.train["mapping"][0]["tag"] == "PlayingGuitar"


def test_shipped_model_is_small_and_its_card_describes_this_file():
    path = default_model_path()
    data = path.read_bytes()
    assert len(data) / 1e6 < MAX_MB
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["sha256"] == hashlib.sha256(data).hexdigest()
    assert card["labels"] == list(labels())
    assert card["measured"]["ms_per_window_batch1"] > 0


def test_export_parity_was_checked_on_real_clips_and_is_small(shipped):
    train = shipped.contract.train
    assert train["parity_input"] == "real"
    assert 0 <= train["parity_max_abs_diff"] < 1e-4
    assert train["parity_top1_agreement"] == 1.0


def test_shipped_graph_has_its_padding_folded_into_the_convolutions():
    onnx = pytest.importorskip("onnx")
    ops = [node.op_type for node in onnx.load(str(default_model_path())).graph.node]
    assert ops.count("Conv") == 49  # Lite0's stem, 16 blocks and head
    assert "Pad" not in ops  # separate Pad nodes took a third of the CPU time before exports were simplified


def test_onnx_matches_torch_and_outputs_probabilities(shipped):
    torch = pytest.importorskip("torch")
    from training.build_default import ImageNetTagModel
    from training.export import UInt8VideoInput
    from training.pretrained import LITE0_MEAN, LITE0_STD

    frames = np.random.default_rng(1).integers(0, 256, (2, 8, 224, 224, 3), dtype=np.uint8)
    got = shipped.scores(frames)  # (2, K)
    wrapper = UInt8VideoInput(ImageNetTagModel().eval(), LITE0_MEAN, LITE0_STD, probs=True).eval()
    with torch.no_grad():
        expected = wrapper(torch.from_numpy(frames)).numpy()
    assert np.abs(got - expected).max() < 1e-4
    assert np.allclose(got.sum(axis=1), 1.0, atol=1e-5) and (got >= 0).all()


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


@pytest.mark.parametrize("clip", GUITAR_CLIPS)
def test_guitar_clips_get_playing_guitar(shared_results, clip):
    assert "PlayingGuitar" in shared_results[clip].tags, shared_results[clip].top


@pytest.mark.parametrize("clip", CELLO_CLIPS)
def test_cello_clips_get_playing_cello(shared_results, clip):
    assert "PlayingCello" in shared_results[clip].tags, shared_results[clip].top


def test_no_clip_without_instruments_gets_a_tag(shared_results):
    others = [r for r in shared_results.values() if r.negative]
    assert len(others) == 9
    tagged = {Path(r.path).name: r.tags for r in others if r.tags or r.error}
    assert tagged == {}


def test_every_instrument_clip_scores_its_own_tag_highest(shared_results):
    for result in shared_results.values():
        if not result.negative:
            assert next(iter(result.top)) == result.label, (result.path, result.top)
