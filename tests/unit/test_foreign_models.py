"""Another framework's model given where an ONNX model goes is named by its first bytes: a PyTorch checkpoint, a
pickle, a TFLite or Keras HDF5 file read 'not an ONNX model (DecodeError: ... Wire format was corrupt)' alone."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import pytest

from qtool.errors import ModelError
from qtool.graph import model as gm


def _zip(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as z:  # torch.save's layout since 1.6
        z.writestr("archive/data.pkl", b"x" * 64)


@pytest.mark.parametrize(("name", "write", "said"), [
    ("m.pt", _zip, "a zip archive: a PyTorch .pt/.pth? export it with torch.onnx.export"),
    ("m.pkl", lambda p: p.write_bytes(pickle.dumps({"w": 1}, protocol=4)), "a Python pickle: a PyTorch or scikit-learn"),
    ("m.tflite", lambda p: p.write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(64)), "a TensorFlow Lite model"),
    ("m.h5", lambda p: p.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64)), "an HDF5 file (Keras .h5?)"),
])  # fmt: skip
def test_another_frameworks_model_is_named(tmp_path: Path, name: str, write, said: str) -> None:
    path = tmp_path / name
    write(path)
    with pytest.raises(ModelError) as info:
        gm.load(path)
    assert str(info.value).startswith(f"{path}: not an ONNX model") and (info.value.hint or "").startswith(said)
