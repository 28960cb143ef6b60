"""A score output whose grid ends short of its decision: a Sigmoid that never passed 0.5 on the calibration samples.

A graph output a Sigmoid writes (a detector's, a wake word's score) is quantized on the range calibration saw, as
every activation is. Calibrated on negatives alone (openwakeword 0.4.0's alexa_v0.1 on speech without the word:
scores up to 4.4e-5, the minimum range's grid [0, 1e-4]) every higher score reads as that grid's end, so the
deployed model never fires: held out, a window the float model scores 0.0027 read 1e-4 (0.4 dB over 64 windows,
and 16 bits on the same grid too), while quantize, judging the calibration samples, reported 25 dB and said
nothing. The Sigmoid's own range, [0, 1], on 16 bits gave 29.8 dB on the same windows. Its input needs room too: an
asymmetric grid holds 0, so a logit calibrated below 0 ends there and the score at 0.5 (a logit past it reads as 0):
the override named gives the logit its calibrated low end mirrored. Only the calibration data can say whether such
scores occur, so this is a warning naming both remedies, not a wider grid chosen for the user.
"""

from __future__ import annotations

import json

import onnx

from qtool.encoding import Encoding
from qtool.graph.attributes import attribute

MOVES = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Identity"})  # values as they are
DECISION = 0.5  # where a score is read as yes
FLOAT_TYPES = frozenset({onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16})


def short_scores(model: onnx.ModelProto, activations: dict[str, Encoding], given: frozenset[str]) -> list[str]:
    """One warning per graph output a Sigmoid writes (through reshapes and float Casts) whose grid ends below DECISION;
    a grid an overrides file gives (`given`) or a float output is the user's choice and is not warned of."""
    producers = {out: node for node in model.graph.node for out in node.output}
    warnings = []
    for output in model.graph.output:
        chain, node = [output.name], producers.get(output.name)  # the tensors from the output back to its maker
        while node is not None and node.input and (node.op_type in MOVES or _float_cast(node)):
            chain.append(node.input[0])
            node = producers.get(node.input[0])
        # a float16 model's output Cast (or a Cast to float16) is not quantized: the tensor before it is
        graded = next((name for name in chain if name in activations), output.name)
        e = activations.get(graded)
        if e is None or e.is_float or not e.max or graded in given or (end := max(e.max)) >= DECISION:
            continue
        if node is None or node.op_type != "Sigmoid":
            continue
        entries = {graded: (0, 1)}
        logit = activations.get(node.input[0])
        if logit is not None and not logit.is_float and logit.min and (low := min(logit.min)) < 0:
            bound = float(f"{-low:.4g}")  # significant digits: a logit calibrated to -0.0004 still gets room
            entries[node.input[0]] = (-bound, bound)  # its end at 0 would stop the score at 0.5
        room = json.dumps({name: [{"bitwidth": 16, "min": lo, "max": hi}] for name, (lo, hi) in entries.items()})[1:-1]
        warnings.append(
            f"output {output.name!r} is a Sigmoid's score, and on the calibration samples it stayed below {end:.3g}, "
            f"where its grid ends: a higher score (a yes past {DECISION}) reads as {end:.3g}. Calibrate on samples it "
            f"scores high too, or give it the Sigmoid's range and its input room in an overrides file's "
            f"activation_encodings: {room}"
        )
    return warnings


def _float_cast(node: onnx.NodeProto) -> bool:
    return node.op_type == "Cast" and attribute(node, "to") in FLOAT_TYPES
