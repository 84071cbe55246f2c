"""Checks the committed ONNX models in models/ with a real onnxruntime session.

Everything the runtime needs is read from the models' own metadata
(postselectd.*); the synthetic input is regenerated here from that metadata
and numpy alone and compared to models/reference_outputs.json, which
models/build_models.py wrote at conversion time.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
SHARED = Path(__file__).resolve().parents[2] / "shared"
REFERENCE = json.loads((MODELS / "reference_outputs.json").read_text())
NAMES = sorted(REFERENCE["models"])

REQUIRED_KEYS = [
    "postselectd.name",
    "postselectd.version",
    "postselectd.input_name",
    "postselectd.input_size",
    "postselectd.layout",
    "postselectd.color",
    "postselectd.normalization",
    "postselectd.batch",
    "postselectd.outputs",
    "postselectd.source",
    "postselectd.source_sha256",
    "postselectd.license",
    "postselectd.upstream",
    "postselectd.task",
    "postselectd.fit",
]
EXPECTED_FILES = {
    "efficientnet_lite0",
    "face_detection_short",
    "face_detection_full",
    "face_landmark",
    "iris_landmark",
    # Trained by models/build_eye_state.py (not converted), checked like the others.
    "eye_state",
}


def session(name: str):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(
        str(MODELS / f"{name}.onnx"), so, providers=["CPUExecutionProvider"]
    )


_SESSIONS: dict = {}


def cached_session(name: str):
    if name not in _SESSIONS:
        _SESSIONS[name] = session(name)
    return _SESSIONS[name]


def meta_of(name: str) -> dict:
    return dict(cached_session(name).get_modelmeta().custom_metadata_map)


def input_size(meta: dict) -> tuple[int, int]:
    w, h = meta["postselectd.input_size"].split("x")
    return int(w), int(h)


def normalization(meta: dict) -> tuple[float, float]:
    kv = dict(item.split("=", 1) for item in meta["postselectd.normalization"].split(";"))
    return float(kv["mean"]), float(kv["std"])


def synthetic_image(width: int, height: int) -> np.ndarray:
    """Same pattern as models/build_models.py (see reference_outputs.json 'synthetic_input')."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    u = x / (width - 1)
    v = y / (height - 1)
    img = np.stack(
        [255.0 * u, 255.0 * v, 127.5 + 127.5 * np.sin(2 * np.pi * (2 * u + 3 * v))],
        axis=-1,
    )
    img += (30.0 * np.sin(2 * np.pi * 6 * u) * np.cos(2 * np.pi * 5 * v))[..., None]
    return np.clip(np.round(img), 0, 255).astype(np.float32)


def to_input(img_hwc: np.ndarray, meta: dict) -> np.ndarray:
    mean, std = normalization(meta)
    x = (img_hwc.astype(np.float32) - np.float32(mean)) / np.float32(std)
    if meta["postselectd.layout"] == "NCHW":
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(x[None], dtype=np.float32)


def check_summary(got: np.ndarray, want: dict, label: str) -> None:
    got = np.asarray(got, dtype=np.float64)
    assert list(got.shape) == want["shape"], label
    scale = max(1.0, abs(want["max"]), abs(want["min"]))
    tol = 1e-3 * scale
    flat = got.reshape(-1)
    np.testing.assert_allclose(
        flat[:8], want["first8"], rtol=0, atol=tol, err_msg=f"{label} first8"
    )
    assert abs(flat.min() - want["min"]) <= tol, f"{label} min {flat.min()} vs {want['min']}"
    assert abs(flat.max() - want["max"]) <= tol, f"{label} max {flat.max()} vs {want['max']}"
    l2 = float(np.sqrt((flat * flat).sum()))
    assert abs(l2 - want["l2"]) <= 1e-3 * max(1.0, want["l2"]), f"{label} l2 {l2} vs {want['l2']}"
    s = float(flat.sum())
    assert abs(s - want["sum"]) <= 1e-3 * (abs(want["sum"]) + want["l2"] + 1.0), (
        f"{label} sum {s} vs {want['sum']}"
    )


# Trained by models/train_default.py, not converted; checked in tests/test_quality.py.
OWN_MODELS = {"keeper_head"}
# Made from a converted model by models/quantize.py: derived file -> its parent.
DERIVED_MODELS = {"face_detection_full_anysize": "face_detection_full"}


def test_every_shipped_model_has_reference_outputs():
    on_disk = {p.stem for p in MODELS.glob("*.onnx")}
    assert on_disk == EXPECTED_FILES | OWN_MODELS | set(DERIVED_MODELS)
    assert set(NAMES) == EXPECTED_FILES


def test_anysize_blazeface_is_its_parent_at_192_and_reads_any_multiple_of_32():
    name, parent = "face_detection_full_anysize", "face_detection_full"
    meta = meta_of(name)
    assert meta["postselectd.name"] == name and "postselectd.derived_from" in meta
    x = to_input(synthetic_image(*input_size(meta)), meta)
    outs = cached_session(name).run(None, {"image": x})
    for o, arr in zip(cached_session(name).get_outputs(), outs, strict=True):
        check_summary(arr, REFERENCE["models"][parent]["outputs"][o.name], f"{name}/{o.name}")
    multiple = int(meta["postselectd.input_multiple"])
    wide = np.zeros((1, 3, 5 * multiple, 7 * multiple), np.float32)
    regressors, scores = cached_session(name).run(None, {"image": wide})
    assert regressors.shape == (1, 5 * 7 * multiple * multiple // 16, 16)
    assert scores.shape == (1, regressors.shape[1], 1)


@pytest.mark.parametrize("name", ["face_landmark", "iris_landmark", "face_detection_full_anysize"])
def test_hot_models_are_rewritten_for_the_blocked_layout(name, tmp_path):
    """models/quantize.py rewrites these after build_models.py (3.4x, 2.5x, 1.2x faster in
    onnxruntime's blocked layout): a rebuild that skipped it would still pass every output
    check and silently cost ~5 ms a photo. Read from onnxruntime's own profile of one run
    (the onnx package is a build-time tool, not installed for the tests)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.enable_profiling = True
    options.profile_file_prefix = str(tmp_path / name)
    # Basic optimizations only: the graph's own ops, not the layout's.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    sess = ort.InferenceSession(
        str(MODELS / f"{name}.onnx"), options, providers=["CPUExecutionProvider"]
    )
    meta = meta_of(name)
    width, height = input_size(meta)
    sess.run(None, {"image": np.zeros((1, 3, height, width), np.float32)})
    events = json.loads(Path(sess.end_profiling()).read_text())
    nodes = [
        e["args"] for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")
    ]
    ops = {node["op_name"] for node in nodes}
    assert "Conv" in ops and not ops & {"PRelu", "Pad"}, ops
    assert (
        "rewritten" in meta["postselectd.derived_from"]
        or "padded" in (meta["postselectd.derived_from"])
    )
    if name == "face_detection_full_anysize":
        # Inside the network every channel count fits the blocks of 16; the score head
        # has one channel.
        channels = {
            next(iter(node["output_type_shape"][0].values()))[1]
            for node in nodes
            if node["op_name"] == "Conv"
        }
        assert all(c == 1 or c % 16 == 0 for c in channels), sorted(channels)


@pytest.mark.parametrize("name", NAMES)
def test_metadata_describes_the_input_contract(name):
    meta = meta_of(name)
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    assert not missing, f"{name}: missing metadata {missing}"
    assert meta["postselectd.name"] == name
    assert meta["postselectd.version"].isdigit()
    assert meta["postselectd.color"] == "RGB"
    assert meta["postselectd.layout"] in ("NCHW", "NHWC")
    assert meta["postselectd.license"] == "Apache-2.0"
    assert "==" in meta["postselectd.source"]
    w, h = input_size(meta)
    mean, std = normalization(meta)
    assert std > 0 and 0 <= mean <= 255
    outputs = json.loads(meta["postselectd.outputs"])
    sess = cached_session(name)
    (inp,) = sess.get_inputs()
    assert inp.name == meta["postselectd.input_name"] == "image"
    expect = [w, h] if meta["postselectd.layout"] == "NHWC" else [h, w]
    spatial = inp.shape[1:3] if meta["postselectd.layout"] == "NHWC" else inp.shape[2:4]
    assert list(spatial) == expect
    assert set(outputs) == {o.name for o in sess.get_outputs()}
    if meta["postselectd.batch"] == "dynamic":
        assert not isinstance(inp.shape[0], int)
    else:
        assert inp.shape[0] == int(meta["postselectd.batch"])


@pytest.mark.parametrize("name", NAMES)
def test_model_reproduces_its_reference_outputs(name):
    meta = meta_of(name)
    w, h = input_size(meta)
    x = to_input(synthetic_image(w, h), meta)
    sess = cached_session(name)
    outs = sess.run(None, {meta["postselectd.input_name"]: x})
    ref = REFERENCE["models"][name]["outputs"]
    for o, arr in zip(sess.get_outputs(), outs, strict=True):
        assert np.all(np.isfinite(arr))
        check_summary(arr, ref[o.name], f"{name}/{o.name}")


def test_lite0_accepts_any_batch_size():
    name = "efficientnet_lite0"
    meta = meta_of(name)
    x = to_input(synthetic_image(*input_size(meta)), meta)
    x3 = np.concatenate([x, x * 0.5, x], axis=0)
    emb, logits = cached_session(name).run(None, {"image": x3})
    assert emb.shape == (3, 1280) and logits.shape == (3, 1000)
    ref = REFERENCE["models"][name]["outputs"]
    check_summary(emb[2:3], ref["embedding"], "batch row 2 embedding")
    check_summary(logits[0:1], ref["logits"], "batch row 0 logits")
    assert not np.allclose(emb[0], emb[1])


def test_eye_state_reads_the_iris_models_crop_two_eyes_at_once():
    """The runtime feeds the eye-state model the very tensor it made for the iris model."""
    meta, iris = meta_of("eye_state"), meta_of("iris_landmark")
    assert input_size(meta) == input_size(iris)
    assert normalization(meta) == normalization(iris)
    assert meta["postselectd.batch"] == "dynamic"
    assert "eye_data_manifest.tsv:" in meta["postselectd.source_sha256"]
    x = to_input(synthetic_image(*input_size(meta)), meta)
    (p,) = cached_session("eye_state").run(None, {"image": np.concatenate([x, x[:, :, :, ::-1]])})
    assert p.shape == (2, 1) and np.all((p >= 0) & (p <= 1))
    check_summary(p[:1], REFERENCE["models"]["eye_state"]["outputs"]["closed_probability"], "b2")
    # Version 2 (430 k weights, fp32) is 1.7 MB: small beside the face models (~28 MB).
    assert (MODELS / "eye_state.onnx").stat().st_size < 2_000_000


@pytest.mark.parametrize("name", ["face_detection_short", "face_detection_full"])
def test_blazeface_anchors_match_its_outputs(name):
    meta = meta_of(name)
    anchors = ssd_anchors(json.loads(meta["postselectd.anchors"]))
    decode = json.loads(meta["postselectd.decode"])
    regressors = json.loads(meta["postselectd.outputs"])["regressors"]["shape"]
    assert anchors.shape == (regressors[1], 2)
    assert decode["box_scale"] == input_size(meta)[0]
    assert len(decode["keypoints"]) == (regressors[2] - 4) // 2 == 6
    assert anchors.min() > 0 and anchors.max() < 1


@pytest.mark.parametrize("name", ["face_landmark", "iris_landmark"])
def test_landmark_metadata_names_the_scale_and_points(name):
    meta = meta_of(name)
    assert int(meta["postselectd.landmark_scale"]) == input_size(meta)[0]
    if name == "iris_landmark":
        contour = json.loads(meta["postselectd.eye_contour"])
        assert len(contour["upper_lid"]) == len(contour["lower_lid"]) == 7
        assert sorted(json.loads(meta["postselectd.iris_points"]).values()) == [
            0,
            1,
            2,
            3,
            4,
        ]


# ---------------------------------------------------------------- BlazeFace decoding (numpy)


def ssd_anchors(opts: dict) -> np.ndarray:
    """MediaPipe SSD anchor centers (fixed anchor size 1x1), in 0..1 input coordinates."""
    anchors = []
    strides = opts["strides"]
    layer = 0
    while layer < opts["num_layers"]:
        last, repeats = layer, 0
        while last < opts["num_layers"] and strides[last] == strides[layer]:
            last += 1
            repeats += 2 if opts["interpolated_scale_aspect_ratio"] == 1.0 else 1
        fh = math.ceil(opts["input_size_height"] / strides[layer])
        fw = math.ceil(opts["input_size_width"] / strides[layer])
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


def detect_faces(name: str, img_hwc: np.ndarray) -> list:
    meta = meta_of(name)
    decode = json.loads(meta["postselectd.decode"])
    anchors = ssd_anchors(json.loads(meta["postselectd.anchors"]))
    reg, cls = cached_session(name).run(
        ["regressors", "classificators"], {"image": to_input(img_hwc, meta)}
    )
    scale = decode["box_scale"]
    raw = reg[0].reshape(-1, 8, 2) / scale
    raw[:, 0] += anchors
    raw[:, 2:] += anchors[:, None, :]
    boxes = np.concatenate([raw[:, 0] - raw[:, 1] / 2, raw[:, 0] + raw[:, 1] / 2], axis=1)
    scores = 1 / (1 + np.exp(-np.clip(cls[0, :, 0], -80, 80)))
    order = [
        i
        for i in np.argsort(-scores, kind="stable")
        if scores[i] > decode["min_score"] and np.all(raw[i, 1] > 0)
    ]
    faces = []
    while order:
        b0 = boxes[order[0]]
        iw = np.clip(
            np.minimum(b0[2], boxes[order, 2]) - np.maximum(b0[0], boxes[order, 0]),
            0,
            None,
        )
        ih = np.clip(
            np.minimum(b0[3], boxes[order, 3]) - np.maximum(b0[1], boxes[order, 1]),
            0,
            None,
        )
        inter = iw * ih
        areas = (boxes[order, 2] - boxes[order, 0]) * (boxes[order, 3] - boxes[order, 1])
        iou = inter / (areas + (b0[2] - b0[0]) * (b0[3] - b0[1]) - inter)
        group = [i for i, o in zip(order, iou, strict=True) if o > decode["nms_min_iou"]]
        w = scores[group][:, None]
        faces.append((float(scores[order[0]]), (boxes[group] * w).sum(0) / w.sum()))
        order = [i for i in order if i not in group]
    return faces


def letterbox(path: Path, size: int) -> np.ndarray:
    from PIL import Image

    im = Image.open(path).convert("RGB")
    w, h = im.size
    s = size / max(w, h)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    canvas = Image.new("RGB", (size, size))
    canvas.paste(im.resize((nw, nh), Image.BILINEAR), ((size - nw) // 2, (size - nh) // 2))
    return np.asarray(canvas, dtype=np.float32)


def test_blazeface_finds_no_face_in_a_test_pattern():
    for name in ("face_detection_short", "face_detection_full"):
        w, h = input_size(meta_of(name))
        assert detect_faces(name, synthetic_image(w, h)) == []


# ---------------------------------------------------------------- facts on ../shared


def need_shared(rel: str) -> Path:
    path = SHARED / rel
    if not path.exists():
        pytest.skip(f"../shared not found: {path}")
    return path


def test_lite0_sees_a_bird_in_the_parrots_photo():
    path = need_shared("eval/natural/kodim23.png")
    from PIL import Image

    fact = REFERENCE["facts"]["kodim23_top5"]
    im = Image.open(path).convert("RGB")
    w, h = im.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    img = np.asarray(
        im.crop((left, top, left + s, top + s)).resize((224, 224), Image.BILINEAR),
        dtype=np.float32,
    )
    meta = meta_of("efficientnet_lite0")
    logits = cached_session("efficientnet_lite0").run(["logits"], {"image": to_input(img, meta)})[
        0
    ][0]
    top5 = [int(i) for i in np.argsort(-logits)[:5]]
    assert top5[0] == fact["top5"][0] == 88  # ImageNet 88 = macaw
    assert len(set(top5) & set(fact["top5"])) >= 4, (top5, fact["top5"])
    assert all(80 <= i <= 100 for i in top5[:2])  # ImageNet bird classes


def test_blazeface_short_finds_the_one_face_in_a_face_crop():
    path = need_shared("eval/eyes-face/eyes-face-0001.jpg")
    fact = REFERENCE["facts"]["eyes_face_0001_faces_short"]
    faces = detect_faces("face_detection_short", letterbox(path, 128))
    assert len(faces) == fact["faces"] == 1
    assert abs(faces[0][0] - fact["scores"][0]) < 0.01
