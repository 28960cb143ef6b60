"""What quantizing a converted model imports: the small models' whole peak is mostly imports."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from conftest import conv_bn_model, run_cli, save_model, write_samples

CONVERT_ONLY = ("onnx_ir", "onnxscript", "sympy")
OPENSSL = ("_hashlib",)  # hashlib's backend: OpenSSL's libcrypto, 3.5 MB resident (qtool.io.digest's hashes do without)
UNIMPORTED = CONVERT_ONLY + OPENSSL


def test_quantizing_a_converted_model_leaves_convert_s_libraries_unimported(tmp_path) -> None:
    """onnx_ir (which imports sympy) and onnxscript serve convert's passes only: one constant imported from a pass
    module took Silero VAD's whole quantize from 97 to 154 MB peak (onnxruntime's quantize_static: 101). Nor is
    libcrypto loaded: a module-level `import hashlib` in convert's quantize_dynamic restore put it back in every run."""
    model = save_model(conv_bn_model(), tmp_path / "m.onnx")
    conv = tmp_path / "m.conv.onnx"
    assert run_cli(["convert", "-i", model, "-o", conv]).exit_code == 0
    samples = write_samples(tmp_path, conv_bn_model(), 4)
    script = textwrap.dedent(f"""
        import sys
        from qtool.cli import main
        main(["quantize", "-i", {str(conv)!r}, "--input_list", {str(samples)!r}, "-o", {str(tmp_path / "q.onnx")!r}],
             standalone_mode=False)
        print(sorted(m for m in {UNIMPORTED!r} if m in sys.modules))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr
