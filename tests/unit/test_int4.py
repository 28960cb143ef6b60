"""Packed 4-bit weights (QNN seed, "Packed 4-bit Quantization"): two values a byte, low nibble first."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper


def test_seed_example_10_4_packs_to_0100_1010() -> None:
    tensor = helper.make_tensor("w", TensorProto.UINT4, [2], [10, 4])
    packed = tensor.raw_data or bytes([tensor.int32_data[0]])
    assert format(packed[0], "08b") == "01001010"


def test_a_27_value_channel_takes_14_bytes_when_packed_alone() -> None:
    tensor = helper.make_tensor("w", TensorProto.INT4, [27], list(np.arange(27) % 16 - 8))
    size = len(tensor.raw_data) or len(tensor.int32_data)
    assert size == 14
