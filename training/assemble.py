"""The shipped default model's graph: the quantised parts graph with the features and head appended.

`training/window_parts.py` exports (and quantises) the backbone half, windows -> parts (the frame
means of the pooled features and of the ImageNet priors); the head is fitted on parts computed by
that very graph. This module appends the rest with plain ONNX nodes, so the scan computes
features and scores from the same quantised parts the head learned from:

    features = concat((parts[:, :2560] - mean) @ projection, log(max(parts[:, 2560:], floor)))
    probs    = sigmoid(features @ weights.T + bias)

`features_from_parts` is the same arithmetic in numpy, used by training, so the two cannot drift
(a test compares them on real windows).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.frame_net import PRIOR_FLOOR, Projection
from training.window_parts import POOLED


def features_from_parts(parts: np.ndarray, projection: Projection) -> np.ndarray:
    """(n, dim + P) features from (n, 2560 + P) parts, as the appended graph computes them."""
    pooled, prior = parts[:, :POOLED], parts[:, POOLED:]
    projected = (pooled - projection.mean) @ projection.matrix
    return np.concatenate([projected, np.log(np.maximum(prior, PRIOR_FLOOR))], axis=1).astype(np.float32)


def append_head(parts_graph: Path, target: Path, projection: Projection, weights: np.ndarray, bias: np.ndarray,
                metadata: dict[str, str]) -> None:
    """Write `target`: `parts_graph` with outputs `probs` (N, K) and `features` (N, D) instead of `parts`."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(parts_graph))
    graph = model.graph
    (parts_output,) = [o for o in graph.output if o.name == "parts"]
    constants = {
        "head_mean": projection.mean.astype(np.float32),
        "head_projection": projection.matrix.astype(np.float32),
        "head_floor": np.array(PRIOR_FLOOR, np.float32),
        "head_weights_t": np.ascontiguousarray(weights.T.astype(np.float32)),
        "head_bias": bias.astype(np.float32),
        "head_s0": np.array([0], np.int64), "head_e0": np.array([POOLED], np.int64),  # pooled: columns 0 .. 2559
        "head_s1": np.array([POOLED], np.int64), "head_e1": np.array([1 << 30], np.int64),  # priors: the rest
        "head_axis": np.array([1], np.int64),
    }
    graph.initializer.extend(numpy_helper.from_array(value, name) for name, value in constants.items())
    graph.node.extend([
        helper.make_node("Slice", ["parts", "head_s0", "head_e0", "head_axis"], ["head_pooled"]),
        helper.make_node("Slice", ["parts", "head_s1", "head_e1", "head_axis"], ["head_prior"]),
        helper.make_node("Sub", ["head_pooled", "head_mean"], ["head_centred"]),
        helper.make_node("MatMul", ["head_centred", "head_projection"], ["head_projected"]),
        helper.make_node("Max", ["head_prior", "head_floor"], ["head_floored"]),
        helper.make_node("Log", ["head_floored"], ["head_log_prior"]),
        helper.make_node("Concat", ["head_projected", "head_log_prior"], ["features"], axis=1),
        helper.make_node("MatMul", ["features", "head_weights_t"], ["head_logits_raw"]),
        helper.make_node("Add", ["head_logits_raw", "head_bias"], ["head_logits"]),
        helper.make_node("Sigmoid", ["head_logits"], ["probs"]),
    ])
    graph.output.remove(parts_output)
    graph.output.extend([helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", len(bias)]),
                         helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", weights.shape[1]])])
    del model.metadata_props[:]
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    onnx.save(model, str(target))
