"""Calibration values are read as the model will see them, and declared sizes are counted without wrapping.

Hostile round three. Each case failed before its fix: a .npy of 300 for an int8 input calibrated on 44
(numpy's cast wraps), 1.7 on 1, inf on -2**63, 1e300 for a float32 input on inf (and the error named a
later tensor's NaN); a declared input of 7 x 5270498306774157632 floats wrapped numpy's int64 product to
192, so a 768-byte .raw file passed the size check and the reshape raised (an internal error), as did
--input_value with 192 values.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from hostile_env import Workspace, assert_refused

from qtool.io.raw import InputSpec, load_tensor


def _two_inputs(root: Path) -> Workspace:
    """x float32[1,4] -> Relu, z int8[2] -> Identity: a float path to quantize and an integer input."""
    ws = Workspace(root)
    ws.model.write_bytes(onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1,4] x, int8[2] z) => (float[1,4] y, int8[2] zo) { y = Relu(x)  zo = Identity(z) }
    """).SerializeToString())  # fmt: skip
    np.arange(4, dtype=np.float32).tofile(root / "x.raw")
    return ws


@pytest.mark.parametrize(
    ("values", "shown"),
    [(np.array([300, 1]), "300"), (np.array([1.7, 1.0]), "1.7"), (np.array([np.inf, 1.0], np.float32), "inf")],
    ids=["wraps", "fraction", "inf"],
)
def test_a_value_an_integer_input_cannot_hold_is_a_data_error(tmp_path: Path, values: np.ndarray, shown: str) -> None:
    ws = _two_inputs(tmp_path)
    np.save(tmp_path / "z.npy", values)
    ws.listing.write_text(f"x:={tmp_path / 'x.raw'} z:={tmp_path / 'z.npy'}\n")
    before = ws.snapshot()
    result = ws.quantize("-o", ws.out)
    assert_refused(ws, before, result, 4, "input_list.txt:1", "z.npy", f"holds {shown}", "int8")


def test_integer_values_in_range_still_load(tmp_path: Path) -> None:
    ws = _two_inputs(tmp_path)
    np.save(tmp_path / "z.npy", np.array([-128.0, 127.0]))
    ws.listing.write_text(f"x:={tmp_path / 'x.raw'} z:={tmp_path / 'z.npy'}\n")
    assert ws.quantize("-o", ws.out).exit_code == 0


def test_a_float_past_float32_is_a_data_error_not_a_later_nan(tmp_path: Path) -> None:
    np.save(tmp_path / "big.npy", np.array([1e300, 0.0]))
    with pytest.raises(Exception, match=r"holds 1e\+300, which input 'x' \(float32\) cannot hold"):
        load_tensor(tmp_path / "big.npy", InputSpec("x", np.dtype(np.float32), (2,)), "l.txt:1")
    np.save(tmp_path / "inf.npy", np.array([np.inf, 0.0]))  # an infinity is data (a mask input), as before
    assert np.isinf(load_tensor(tmp_path / "inf.npy", InputSpec("x", np.dtype(np.float32), (2,)), "l.txt:1")[0])


def _wrapping_model(root: Path) -> Workspace:
    """x float[7, 5270498306774157632]: 7 x that is 192 modulo 2**64, numpy's int64 product of the dims."""
    ws = Workspace(root)
    ws.model.write_bytes(onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[7,5270498306774157632] x) => (float[7,5270498306774157632] y) { y = Relu(x) }
    """).SerializeToString())  # fmt: skip
    np.zeros(192, np.float32).tofile(root / "x.raw")
    ws.listing.write_text(f"{root / 'x.raw'}\n")
    return ws


def test_a_declared_size_past_int64_does_not_wrap_onto_the_files(tmp_path: Path) -> None:
    ws = _wrapping_model(tmp_path)
    before = ws.snapshot()
    result = ws.quantize("-o", ws.out)
    assert_refused(ws, before, result, 4, "x.raw has 768 bytes", "needs 147573952589676413696")


def test_input_value_counts_a_declared_size_past_int64_without_wrapping(tmp_path: Path) -> None:
    ws = _wrapping_model(tmp_path)
    before = ws.snapshot()
    result = ws.run("convert", "-i", ws.model, "-o", ws.out, "--input_value", "x", ",".join(["1"] * 192))
    assert_refused(ws, before, result, 2, "192 value(s) for an input of shape [7, 5270498306774157632]")
