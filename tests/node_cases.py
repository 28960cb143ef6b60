"""The ONNX backend node suite as an operator-coverage check (issue 21).

The onnx wheel ships the generators, not the data: `collect_testcases()` yields each case's model
and its `test_data_set_0` inputs and outputs. A case qualifies when every graph input is float32
and the model loads in onnxruntime. Each one goes through `qtool quantize` on its own inputs, and
ends in one of:
- "ok": exit 0, and the written model loads and runs in onnxruntime;
- "refused": exit 2, 3 or 4 with one `qtool: error:` line (the op and why);
- "internal": exit 1 or a traceback (a bug);
- "invalid": exit 0 but onnxruntime cannot load or run the written model (a bug).
`bench/run.py --suite nodes` runs every case; `make test` a fixed sample.
"""

from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from click.testing import CliRunner

from qtool.cli import main


@dataclass(frozen=True)
class Outcome:
    name: str
    kind: str  # ok | refused | internal | invalid
    detail: str = ""


@functools.cache
def float_cases() -> tuple:
    """The node cases whose inputs are all float32 and whose float model onnxruntime runs."""
    import warnings

    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = collect_testcases()
    found = []
    for case in cases:
        if case.kind != "node" or not case.data_sets or case.model is None:
            continue
        inputs, _ = case.data_sets[0]
        declared = [i for i in case.model.graph.input if i.name not in {x.name for x in case.model.graph.initializer}]
        if not declared or len(declared) != len(inputs):
            continue
        if not all(isinstance(a, np.ndarray) and a.dtype == np.float32 for a in inputs):
            continue
        found.append(case)
    return tuple(found)


def _session(model: onnx.ModelProto | str) -> ort.InferenceSession:
    source = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(source, providers=["CPUExecutionProvider"])


def runs_in_onnxruntime(case) -> bool:
    try:
        inputs, _ = case.data_sets[0]
        names = [i.name for i in _session(case.model).get_inputs()]
        _session(case.model).run(None, dict(zip(names, inputs, strict=False)))
    except Exception:
        return False
    return True


def _as_declared(array: np.ndarray, shape: list | None) -> np.ndarray:
    """The data in the written model's declared shape where only that differs (an opset upgrade
    drops Scan-8's batch axis)."""
    if shape and all(isinstance(d, int) for d in shape) and int(np.prod(shape)) == array.size:
        return array.reshape(shape)
    return array


def run_case(case) -> Outcome:
    inputs, _ = case.data_sets[0]
    with tempfile.TemporaryDirectory(prefix="qtool-node-") as folder:
        root = Path(folder)
        model_path = root / "model.onnx"
        onnx.save(case.model, str(model_path))
        declared = [i for i in case.model.graph.input if i.name not in {x.name for x in case.model.graph.initializer}]
        names = [i.name for i in declared]
        tokens, dims = [], []
        for k, (value, array) in enumerate(zip(declared, inputs, strict=True)):
            raw = root / f"in{k}.raw"
            raw.write_bytes(np.ascontiguousarray(array, dtype="<f4").tobytes())
            tokens.append(f"{value.name}:={raw}")
            free = any(not d.HasField("dim_value") for d in value.type.tensor_type.shape.dim)
            if free and array.ndim and all(array.shape):  # the data's own shape, for dims the model leaves free
                dims += ["--input_dim", value.name, ",".join(map(str, array.shape))]
        (root / "list.txt").write_text(" ".join(tokens) + "\n")
        out = root / "q.onnx"
        args = ["quantize", "-i", str(model_path), "--input_list", str(root / "list.txt"), "-o", str(out), *dims]
        result = CliRunner().invoke(main, args)
        errors = [line for line in result.stderr.splitlines() if line.startswith("qtool: error:")]
        if result.exit_code in (2, 3, 4) and len(errors) == 1 and "Traceback" not in result.stderr:
            return Outcome(case.name, "refused", errors[0])
        if result.exit_code != 0:
            return Outcome(case.name, "internal", f"exit {result.exit_code}: {result.stderr.strip()[-300:]}")
        try:
            session = _session(str(out))
            shapes = {i.name: i.shape for i in session.get_inputs()}
            session.run(None, {n: _as_declared(a, shapes.get(n)) for n, a in zip(names, inputs, strict=True)})
        except Exception as e:
            return Outcome(case.name, "invalid", str(e).splitlines()[0][:300])
    return Outcome(case.name, "ok")
