"""export --format encodings writes its JSON an entry at a time as it is made (a 2.35 GB decoder's W4 B32 file is
478 MB, built whole it held 1.9 GB): the same text to_json gives, and a format that cannot hold an entry still
writes nothing, though the error comes only as the file is written."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from block_models import mlp_model
from conftest import run_cli, save_model, write_samples

from qtool.io.encodings import to_json
from qtool.quant.qdq_read import qdq_encodings


def _blocked(tmp_path: Path) -> Path:
    model = mlp_model()
    source, output = save_model(model, tmp_path / "m.onnx"), tmp_path / "m.quant.onnx"
    result = run_cli(["quantize", "-i", source, "-o", output, "--input_list", write_samples(tmp_path, model, 4),
                      "--weights_bitwidth", "4", "--weights_block_size", "32", "--encodings_format", "1.0.0"])  # fmt: skip
    assert result.exit_code == 0, result.output
    return output


@pytest.mark.parametrize("fmt", ["1.0.0", "2.0.0"])
def test_the_streamed_file_is_the_text_to_json_gives(tmp_path: Path, fmt: str) -> None:
    qdq, out = _blocked(tmp_path), tmp_path / "x"
    result = run_cli(["export", "-i", qdq, "-o", out, "--format", "encodings", "--encodings_format", fmt])
    assert result.exit_code == 0, result.output
    found = qdq_encodings(onnx.load(str(qdq)), str(qdq))
    assert (out / "m.quant.encodings.json").read_text() == to_json(found, fmt)


def test_an_entry_the_format_cannot_hold_writes_no_file(tmp_path: Path) -> None:
    qdq, out = _blocked(tmp_path), tmp_path / "x"
    result = run_cli(["export", "-i", qdq, "-o", out, "--format", "stripped", "--format", "encodings"])  # legacy 0.6.1
    assert result.exit_code == 2 and "legacy (0.6.1) encodings format cannot express the per-block" in result.stderr
    assert not out.exists() or not any(out.iterdir())
