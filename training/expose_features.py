"""Give a crop-head default (v2: `efficientnet-lite0-crop-head`) the `features` output the scan stores.

    python -m training.expose_features exports/default.onnx [--out PATH]

The v2 graph already computes, per crop of each frame, the standardised vector its head reads
(pooled Lite0 features and log ImageNet priors, `/model/head/Mul_output_0`, shape (N*T*crops, D)).
This adds one output, `features` (N, D): that vector averaged over the window's frames and crops,
and says so in `tagger.features`. `probs` is untouched (the same nodes, the same numbers), so
every tag a scan gives stays as it was; what changes is that stored windows can teach `tagger
learn` and answer `tagger similar` without decoding again. No `tagger.head` is written: the v2
head takes the best crop of each frame, which a window's average cannot reproduce.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HEAD_INPUT = "/model/head/Mul_output_0"  # per crop: (x - mean) * inv_std, what the head's Gemm reads
FEATURES = "features"


def expose(source: Path, target: Path) -> int:
    """Write `target`: `source` with a `features` output; returns its dimension D."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(source))
    graph = model.graph
    if any(o.name == FEATURES for o in graph.output):
        raise SystemExit(f"{source} already has a {FEATURES} output: nothing to do")
    if not any(HEAD_INPUT in n.output for n in graph.node):
        raise SystemExit(f"{source} has no {HEAD_INPUT}: only the v2 crop-head default can be given features this way")
    meta = {p.key: p.value for p in model.metadata_props}
    clip_len, crops = int(meta["tagger.clip_len"]), int(meta.get("tagger.crops", "1"))
    dim = next(i.dims[1] for i in graph.initializer if i.name == "model.head.inv_std")
    shape = helper.make_tensor("features_shape", TensorProto.INT64, [3], [-1, clip_len * crops, dim])
    graph.initializer.append(shape)
    graph.node.extend([
        helper.make_node("Reshape", [HEAD_INPUT, "features_shape"], ["features_per_crop"], name="features_reshape"),
        helper.make_node("ReduceMean", ["features_per_crop"], [FEATURES], axes=[1], keepdims=0, name="features_mean")
        if model.opset_import[0].version < 18 else
        helper.make_node("ReduceMean", ["features_per_crop", "features_axes"], [FEATURES], keepdims=0,
                         name="features_mean"),
    ])
    if model.opset_import[0].version >= 18:
        graph.initializer.append(helper.make_tensor("features_axes", TensorProto.INT64, [1], [1]))
    graph.output.append(helper.make_tensor_value_info(FEATURES, TensorProto.FLOAT, ["N", dim]))
    description = {"dim": int(dim), "dtype": "float16",
                   "what": f"the head's standardised input (pooled Lite0 features and log ImageNet priors), "
                           f"mean over the window's {clip_len} frames x {crops} crops"}
    props = [p for p in model.metadata_props if p.key != "tagger.features"]
    del model.metadata_props[:]
    model.metadata_props.extend(props)
    model.metadata_props.append(onnx.StringStringEntryProto(key="tagger.features", value=json.dumps(description)))
    onnx.checker.check_model(model)
    onnx.save(model, str(target))
    return int(dim)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.expose_features", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="the v2 default (exports/default.onnx)")
    parser.add_argument("--out", type=Path, help="where to write it [default: over MODEL]")
    args = parser.parse_args(argv)
    dim = expose(args.model, args.out or args.model)
    print(f"wrote {args.out or args.model}: features output of {dim} values per window")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
