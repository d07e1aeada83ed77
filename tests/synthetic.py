"""Generated test material: tiny videos of known content and a tiny ONNX model that reads colour.

`write_video` encodes frames with PyAV, so tests control codec, container, rate, size and length.
`write_colour_model` builds, with onnx.helper alone (no torch), a model obeying the tagger
contract whose scores are the mean red, green and blue of the clip: a red stretch of video must
come back as a `Red` segment with exact, predictable times.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

RED, GREEN, BLUE, GREY = (230, 20, 20), (20, 230, 20), (20, 20, 230), (90, 90, 90)


def solid(colour) -> Callable[[float], tuple]:
    """A colour function that is `colour` at every time."""
    return lambda t: colour


def timeline(*spans: tuple[float, tuple]) -> Callable[[float], tuple]:
    """A colour function from (until_seconds, colour) spans, the last one lasting to the end."""

    def colour_at(t: float) -> tuple:
        for until, colour in spans:
            if t < until:
                return colour
        return spans[-1][1]

    return colour_at


def write_video(
    path: Path,
    seconds: float,
    fps: float = 25,
    size: tuple[int, int] = (160, 120),
    codec: str = "mpeg4",
    colour_at: Callable[[float], tuple] = solid(GREY),
    pix_fmt: str = "yuv420p",
) -> Path:
    """Encode a video whose frame at time t is filled with colour_at(t), plus a moving square."""
    import av
    from fractions import Fraction

    width, height = size
    frames = max(1, int(round(seconds * fps)))
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        for index in range(frames):
            t = index / fps
            image = np.empty((height, width, 3), np.uint8)
            image[:] = colour_at(t)
            x = int((index * 3) % max(1, width - 8))
            image[2:8, x : x + 6] = 255 - image[2:8, x : x + 6]  # motion, so encoders see change
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_colour_model(
    path: Path,
    clip_len: int = 4,
    fps: float = 4.0,
    frame_step: int = 1,
    size: int = 32,
    threshold: float = 0.5,
    labels: tuple[str, ...] = ("Red", "Green", "Blue"),
    extra: dict | None = None,
) -> Path:
    """An ONNX model whose score for Red/Green/Blue is the clip's mean channel value / 255."""
    import onnx
    from onnx import TensorProto, helper

    from tagger.contract import ModelContract

    nodes = [
        helper.make_node("Cast", ["frames"], ["as_float"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["as_float", "axes"], ["mean"], keepdims=0),
        helper.make_node("Div", ["mean", "scale"], ["probs"]),
    ]
    graph = helper.make_graph(
        nodes,
        "colour",
        [helper.make_tensor_value_info("frames", TensorProto.UINT8, ["N", clip_len, size, size, 3])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 3])],
        initializer=[
            helper.make_tensor("axes", TensorProto.INT64, [3], [1, 2, 3]),
            helper.make_tensor("scale", TensorProto.FLOAT, [], [255.0]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    contract = ModelContract(
        labels=labels, clip_len=clip_len, size=(size, size), resize=size, fps=fps, frame_step=frame_step,
        thresholds={label: threshold for label in labels}, output="probs", arch="colour-test", version="1",
        extra=extra or {},
    )
    for key, value in contract.to_metadata().items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
