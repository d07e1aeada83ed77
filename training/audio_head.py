"""The default model's sound side: the musicnn music tagger with a head learned on the video corpus.

musicnn (`exports/musicnn.onnx`, built from its PyPI wheel by `training/build_musicnn.py`) hears
3 s patches and scores 50 MagnaTagATune tags; v1 of the sound side mapped a few of them to
instruments by hand (`training/musicnn_map.py`). Here its penultimate layer (200 values) and its
50 tag logits are the features (`tagger.features`, stored per window like the vision model's), and
one logistic regression per instrument label is fitted on the sound of the corpus's videos
(`training/frame_head.py`), each label's weight on its mapped MTT tag logit pulled towards 1 so it
starts from what musicnn already hears (sitar, guitar, piano, ...). The shipped graph:

    features = concat(hidden, mtt_logits)                 # (N, 250)
    probs    = concat(sigmoid(features @ W.T + b), sigmoid(mtt_logits))   # labels, then mtt:<tag>
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.musicnn_map import INSTRUMENTS, MTT_TAGS
from training.window_parts import AUDIO_PARTS

HIDDEN = 200  # musicnn's penultimate layer
MTT_PROBS = "/Sigmoid_output_0"


def mtt_prior_columns(labels: tuple[str, ...]) -> list[int | None]:
    """Per label, the feature column of its mapped MTT tag's logit (the first mapped tag), or None."""
    mapped = {row.label: row.mtt_tags[0] for row in INSTRUMENTS if row.mtt_tags}
    return [HIDDEN + MTT_TAGS.index(mapped[label]) if label in mapped else None for label in labels]


def append_audio_head(musicnn: Path, target: Path, weights: np.ndarray, bias: np.ndarray,
                      metadata: dict[str, str]) -> None:
    """Write `target`: `musicnn` with outputs `probs` (N, K + 50) and `features` (N, 250)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(musicnn))
    graph = model.graph
    # the hand-mapped instrument labels of v1 (mask, max, concat into `probs`) give way to the head
    old_tail = {"probs", "/ReduceMax_output_0", "/Mul_output_0", "/Unsqueeze_output_0"}
    kept = [node for node in graph.node if not set(node.output) & old_tail]
    del graph.node[:]
    graph.node.extend(kept)
    graph.initializer.extend([numpy_helper.from_array(np.ascontiguousarray(weights.T.astype(np.float32)), "ahead_w"),
                              numpy_helper.from_array(bias.astype(np.float32), "ahead_b")])
    graph.node.extend([
        helper.make_node("Concat", list(AUDIO_PARTS), ["features"], axis=1),
        helper.make_node("MatMul", ["features", "ahead_w"], ["ahead_raw"]),
        helper.make_node("Add", ["ahead_raw", "ahead_b"], ["ahead_logits"]),
        helper.make_node("Sigmoid", ["ahead_logits"], ["ahead_probs"]),
        helper.make_node("Concat", ["ahead_probs", MTT_PROBS], ["probs"], axis=1),
    ])
    del graph.output[:]
    graph.output.extend([helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", len(bias) + len(MTT_TAGS)]),
                         helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", HIDDEN + len(MTT_TAGS)])])
    initialisers_used = {name for node in graph.node for name in node.input}
    unused = [init for init in graph.initializer if init.name not in initialisers_used]
    for init in unused:
        graph.initializer.remove(init)
    del model.metadata_props[:]
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    onnx.save(model, str(target))
