"""Give a crop-head default (v2: `efficientnet-lite0-crop-head`) the `features` output the scan stores.

    git show 1e9d463:exports/default.onnx > runs/eval/v2.onnx
    python -m training.expose_features runs/eval/v2.onnx --out runs/v2-features --ship

The v2 graph already computes, per crop of each frame, the standardised vector its head reads
(pooled Lite0 features and log ImageNet priors, `/model/head/Mul_output_0`, shape (N*T*crops, D)).
This adds one output, `features` (N, D): that vector averaged over the window's frames and crops,
and says so in `tagger.features`. `probs` is untouched (the same nodes, the same numbers), so
every tag a scan gives stays as it was; what changes is that stored windows can teach `tagger
learn` and answer `tagger similar` without decoding again. No `tagger.head` is written: the v2
head takes the best crop of each frame, which a window's average cannot reproduce.

`--ship` then runs the default's gate against SOURCE (`training.default_files.ship`: per-label
tags on the test split's real videos, side by side) and, when it passes, copies the model into
exports/ and measures the scan with it (bench/scan_speed.py) for its card.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from tagger.contract import ModelContract
from tagger.model import file_sha256

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
    contract = ModelContract.from_metadata({p.key: p.value for p in model.metadata_props}, str(source))
    dim = next(i.dims[1] for i in graph.initializer if i.name == "model.head.inv_std")
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    graph.initializer.append(helper.make_tensor("features_shape", TensorProto.INT64, [3],
                                                [-1, contract.input_frames, dim]))
    reshape = helper.make_node("Reshape", [HEAD_INPUT, "features_shape"], ["features_per_crop"], name="features_reshape")
    if opset < 18:  # ReduceMean's axes: an attribute before opset 18, an input since
        mean = helper.make_node("ReduceMean", ["features_per_crop"], [FEATURES], axes=[1], keepdims=0,
                                name="features_mean")
    else:
        graph.initializer.append(helper.make_tensor("features_axes", TensorProto.INT64, [1], [1]))
        mean = helper.make_node("ReduceMean", ["features_per_crop", "features_axes"], [FEATURES], keepdims=0,
                                name="features_mean")
    graph.node.extend([reshape, mean])
    graph.output.append(helper.make_tensor_value_info(FEATURES, TensorProto.FLOAT, ["N", dim]))
    description = {"dim": int(dim), "dtype": "float16",
                   # add-on heads and stored features are matched by space: this one is v2's own
                   "space": f"lite0-v2-cropmean-{file_sha256(source)[:16]}",
                   "what": f"the head's standardised input (pooled Lite0 features and log ImageNet priors), "
                           f"mean over the window's {contract.clip_len} frames x {contract.crops} crops"}
    del model.metadata_props[:]
    for key, value in dataclasses.replace(contract, extra={**contract.extra, "features": description}).to_metadata().items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    onnx.checker.check_model(model)
    onnx.save(model, str(target))
    return int(dim)


def main(argv: list[str] | None = None) -> int:
    from training.default_files import ROOT, ship

    parser = argparse.ArgumentParser(prog="python -m training.expose_features", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="the v2 default (git show 1e9d463:exports/default.onnx)")
    parser.add_argument("--out", type=Path, required=True, help="a folder: default.onnx and default.json go there")
    parser.add_argument("--card", type=Path, default=ROOT / "exports" / "default.json",
                        help="the model's card to carry over [%(default)s]")
    parser.add_argument("--ship", action="store_true", help="then the gate against MODEL, and exports/ if it passes")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    dim = expose(args.model, args.out / "default.onnx")
    card = {k: v for k, v in json.loads(args.card.read_text()).items() if k not in ("gate", "features")}
    card["features"] = {"dim": dim, "added_by": "python -m training.expose_features: the head's standardised "
                        "input, mean over the window's frames and crops; probs unchanged"}
    (args.out / "default.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out / 'default.onnx'}: features output of {dim} values per window")
    if args.ship:
        return 0 if ship(args.out, (args.model, ROOT / "exports" / "musicnn.onnx")) else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
