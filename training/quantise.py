"""INT8 copies of exported video models: onnxruntime's static QDQ quantiser, calibrated on real windows.

Weights are int8 per channel, reduced to 7 bits so CPUs without VNNI cannot saturate; activations
uint8; Conv and Clip are quantised, the stem and the last convolution stay in float, and anything
after the backbone (heads, pooling) stays in float. The quantised file keeps the original's
metadata, so its contract (labels, thresholds, crops) is the same. Whether its tags stay the same
is measured by the caller on held-out footage (`bench/int8_trial.py`, `training/build_default.py`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np


def quantise(source: Path, target: Path, calibration: list[np.ndarray], float_convs: tuple[int, ...] = (0, -1)) -> None:
    """Write an INT8 copy of `source` to `target`, calibrated on `calibration` windows (T, H, W, 3).

    `float_convs`: positions, in graph order, of the convolutions kept in float (the stem and the
    backbone's last one by default; a whole-frame graph also runs the ImageNet classifier as one).
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Windows(CalibrationDataReader):
        def __init__(self) -> None:
            self.left = iter(calibration)

        def get_next(self):
            window = next(self.left, None)
            return None if window is None else {"frames": window[None]}

    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        graph = onnx.load(str(prepared))
        convs = [node.name for node in graph.graph.node if node.op_type == "Conv"]
        quantize_static(str(prepared), str(target), Windows(), quant_format=QuantFormat.QDQ, per_channel=True,
                        reduce_range=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=["Conv", "Clip"], nodes_to_exclude=[convs[i] for i in float_convs])
    quantised, original = onnx.load(str(target)), onnx.load(str(source))
    del quantised.metadata_props[:]
    quantised.metadata_props.extend(original.metadata_props)  # same contract: labels, thresholds
    onnx.save(quantised, str(target))
