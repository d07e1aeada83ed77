"""Generated test material: tiny videos of known content and a tiny ONNX model that reads colour.

`write_video` encodes frames with PyAV, so tests control codec, container, rate, size and length.
`write_colour_model` builds, with onnx.helper alone (no torch), a model obeying the tagger
contract whose scores are the mean red, green and blue of the clip: a red stretch of video must
come back as a `Red` segment with exact, predictable times. `write_redness_model` reads C crops
per frame (`tagger.crops`), so a red corner a centre crop misses is still seen.
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
    audio_codec: str | None = None,
    loudness_at: Callable[[float], float] = lambda t: 0.5,
    audio_rate: int = 44100,
    paint: Callable[[np.ndarray, float], None] | None = None,
    options: dict[str, str] | None = None,
) -> Path:
    """Encode a video whose frame at time t is filled with colour_at(t), plus a moving square.

    With `audio_codec`, a 440 Hz tone of amplitude loudness_at(t) plays along (stereo). `paint`,
    when given, draws on each (H, W, 3) frame in place before it is encoded: paint(image, t).
    `options` go to the video encoder, e.g. {"g": "5", "bf": "0"}: a keyframe every 5 frames and
    no B-frames (the GOP structure).
    """
    import av
    from fractions import Fraction

    width, height = size
    frames = max(1, int(round(seconds * fps)))
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001), options=options or {})
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        sound = None
        if audio_codec:
            sound = container.add_stream(audio_codec, rate=audio_rate)
            sound.layout = "stereo"
            if audio_codec == "vorbis":
                sound.codec_context.options = {"strict": "experimental"}
        for index in range(frames):
            t = index / fps
            image = np.empty((height, width, 3), np.uint8)
            image[:] = colour_at(t)
            if paint is not None:
                paint(image, t)
            x = int((index * 3) % max(1, width - 8))
            image[2:8, x : x + 6] = 255 - image[2:8, x : x + 6]  # motion, so encoders see change
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if sound is not None:
            _write_tone(container, sound, seconds, audio_rate, loudness_at)
    return path


def _write_tone(container, sound, seconds: float, rate: int, loudness_at: Callable[[float], float]) -> None:
    import av

    block = sound.codec_context.frame_size or 1024
    total = int(seconds * rate)
    for begin in range(0, total, block):
        t = (begin + np.arange(min(block, total - begin))) / rate
        wave = (np.sin(2 * np.pi * 440 * t) * np.array([loudness_at(x) for x in t])).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(np.stack([wave, wave]), format="fltp", layout="stereo")
        frame.sample_rate, frame.pts = rate, begin
        for packet in sound.encode(frame):
            container.mux(packet)
    for packet in sound.encode():
        container.mux(packet)


def write_loudness_model(
    path: Path,
    labels: tuple[str, ...] = ("Red", "Violet"),
    thresholds: dict[str, float] | None = None,
    sample_rate: int = 16000,
    patch_seconds: float = 1.0,
    extra: dict | None = None,
) -> Path:
    """An audio ONNX model: every label scores min(1, 4 * mean |sample|) of the patch (a tone of
    amplitude 0.5 scores 1, silence 0)."""
    import onnx
    from onnx import TensorProto, helper

    from tagger.contract import ModelContract

    samples = int(round(sample_rate * patch_seconds))
    nodes = [
        helper.make_node("Abs", ["audio"], ["magnitude"]),
        helper.make_node("ReduceMean", ["magnitude", "axes"], ["level"], keepdims=1),
        helper.make_node("Mul", ["level", "gain"], ["loud"]),
        helper.make_node("Clip", ["loud", "zero", "one"], ["clipped"]),
        helper.make_node("Expand", ["clipped", "shape"], ["probs"]),
    ]
    graph = helper.make_graph(
        nodes, "loudness",
        [helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["N", samples])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", len(labels)])],
        initializer=[
            helper.make_tensor("axes", TensorProto.INT64, [1], [1]),
            helper.make_tensor("gain", TensorProto.FLOAT, [], [4.0]),
            helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
            helper.make_tensor("one", TensorProto.FLOAT, [], [1.0]),
            helper.make_tensor("shape", TensorProto.INT64, [2], [1, len(labels)]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    contract = ModelContract(
        labels=labels, kind="audio", sample_rate=sample_rate, patch_seconds=samples / sample_rate,
        thresholds=thresholds or {label: 0.5 for label in labels}, output="probs", arch="loudness-test",
        version="1", extra=extra or {},
    )
    for key, value in contract.to_metadata().items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
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
    features: bool = False,
    whole_frame: int = 0,
    background: str | None = None,
    head: tuple[np.ndarray, np.ndarray] | None = None,
    space: str = "colour-test-1",
) -> Path:
    """An ONNX model whose score for Red/Green/Blue is the clip's mean channel value / 255.

    With `features`, it also gives those three means as its `features` output (`tagger.features`,
    dim 3, space `space`): a stored window's features are then its mean colour. With
    `whole_frame`, it takes whole frames of any size (`tagger.whole_frame`) instead of crops.
    `background` names one label as the model's background label (never a tag). With
    `head` = (weights (K, 3), bias (K,)), its K `labels` score sigmoid(means @ weights.T + bias)
    instead, and its metadata records that head (`tagger.head`), as a model whose own head is a
    linear map of its features does: another model of the same space re-scores its windows.
    """
    import onnx
    from onnx import TensorProto, helper

    from tagger.contract import ModelContract
    from tagger.heads import encode_matrix

    means = "probs" if head is None else "means"
    nodes = [
        helper.make_node("Cast", ["frames"], ["as_float"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["as_float", "axes"], ["mean"], keepdims=0),
        helper.make_node("Div", ["mean", "scale"], [means]),
    ]
    initializers = []
    if head is not None:
        weights, bias = (np.asarray(x, dtype=np.float32) for x in head)
        nodes += [helper.make_node("Gemm", [means, "head_weights", "head_bias"], ["logits"], transB=1),
                  helper.make_node("Sigmoid", ["logits"], ["probs"])]
        initializers += [helper.make_tensor("head_weights", TensorProto.FLOAT, list(weights.shape), weights.ravel()),
                         helper.make_tensor("head_bias", TensorProto.FLOAT, [len(bias)], bias)]
        extra = {**(extra or {}), "head": {"weights": encode_matrix(weights), "bias": [float(b) for b in bias],
                                           "activation": "sigmoid"}}
        features = True
    outputs = [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", len(labels)])]
    if features:
        nodes.append(helper.make_node("Identity", [means], ["features"]))
        outputs.append(helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 3]))
        extra = {**(extra or {}), "features": {"dim": 3, "space": space}}
    height, width = ("H", "W") if whole_frame else (size, size)
    graph = helper.make_graph(
        nodes,
        "colour",
        [helper.make_tensor_value_info("frames", TensorProto.UINT8, ["N", clip_len, height, width, 3])],
        outputs,
        initializer=[
            helper.make_tensor("axes", TensorProto.INT64, [3], [1, 2, 3]),
            helper.make_tensor("scale", TensorProto.FLOAT, [], [255.0]),
            *initializers,
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    contract = ModelContract(
        labels=labels, clip_len=clip_len, size=(size, size), resize=size, fps=fps, frame_step=frame_step,
        thresholds={label: threshold for label in labels}, output="probs", arch="colour-test", version="1",
        whole_frame=whole_frame, extra=extra or {}, background=background,
    )
    for key, value in contract.to_metadata().items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def write_redness_model(
    path: Path,
    crops: int,
    clip_len: int = 4,
    fps: float = 4.0,
    size: int = 64,
    threshold: float = 0.12,
    extra: dict | None = None,
) -> Path:
    """A `crops`-crop ONNX model (`tagger.crops`) scoring [Red, NoInstrument]: Red is the largest,
    over the crops, of the crop's mean (red - (green + blue) / 2) / 255 over the clip, clipped to
    [0, 1]; NoInstrument is 1 - Red. Grey scores 0; a red patch filling a quarter of one crop ~0.2.

    Input `frames` is [N, clip_len * crops, size, size, 3], frame-major, as the contract says; the
    graph reshapes it to (N, T, C, size * size, 3) itself.
    """
    import onnx
    from onnx import TensorProto, helper

    from tagger.contract import ModelContract

    labels = ("Red", "NoInstrument")
    nodes = [
        helper.make_node("Cast", ["frames"], ["as_float"], to=TensorProto.FLOAT),
        helper.make_node("Reshape", ["as_float", "by_crop"], ["pixels"]),  # (N, T, C, P, 3)
        helper.make_node("ReduceMean", ["pixels", "time_and_space"], ["colour"], keepdims=0),  # (N, C, 3)
        helper.make_node("MatMul", ["colour", "redness_weights"], ["redness"]),  # (N, C, 1)
        helper.make_node("ReduceMax", ["redness", "crop_axis"], ["reddest"], keepdims=0),  # (N, 1)
        helper.make_node("Div", ["reddest", "scale"], ["scaled"]),
        helper.make_node("Clip", ["scaled", "zero", "one"], ["red"]),
        helper.make_node("Sub", ["one", "red"], ["rest"]),
        helper.make_node("Concat", ["red", "rest"], ["probs"], axis=1),  # (N, 2)
    ]
    graph = helper.make_graph(
        nodes, "redness",
        [helper.make_tensor_value_info("frames", TensorProto.UINT8, ["N", clip_len * crops, size, size, 3])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 2])],
        initializer=[
            helper.make_tensor("by_crop", TensorProto.INT64, [5], [0, clip_len, crops, -1, 3]),
            helper.make_tensor("time_and_space", TensorProto.INT64, [2], [1, 3]),
            helper.make_tensor("redness_weights", TensorProto.FLOAT, [3, 1], [1.0, -0.5, -0.5]),
            helper.make_tensor("crop_axis", TensorProto.INT64, [1], [1]),
            helper.make_tensor("scale", TensorProto.FLOAT, [], [255.0]),
            helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
            helper.make_tensor("one", TensorProto.FLOAT, [], [1.0]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    contract = ModelContract(
        labels=labels, clip_len=clip_len, size=(size, size), resize=size, fps=fps, crops=crops,
        thresholds={label: threshold for label in labels}, output="probs", background="NoInstrument",
        arch="redness-test", version="1", extra=extra or {},
    )
    for key, value in contract.to_metadata().items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
