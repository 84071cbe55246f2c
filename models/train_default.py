#!/usr/bin/env python3
"""Train the default keeper head (models/keeper_head.onnx) on synthetic degradations.

No photographer's select/reject history can ship with the project, so the default model
learns what every photographer rejects: frames out of focus, with motion blur, badly
over- or underexposed. Each real photo of ../shared/eval/natural (Kodak, BSDS, Debian
wallpapers) is a keeper as it is and after harmless changes (a little exposure shift,
slight softening or noise), and a reject after a strong degradation of one kind. Photos
are split into training / calibration / test by photo (never a variant of the same
photo on both sides), like the original work kept each shoot's subject in one split.

The head is a multinomial logistic regression over postselectd's own measurements
(postselectd.analysis.measure.FEATURE_NAMES) and the EfficientNet-Lite0 embedding
reduced by PCA, written as a tiny ONNX graph (standardize -> PCA -> linear -> softmax
with a fitted temperature). P(keeper) is its first output; the other classes say why.

    python models/train_default.py ../shared/eval          # writes models/keeper_head.onnx

It also records, in models/keeper_head_reference.json, the measurements, embedding and
class probabilities of a few training photos as the training code computed them
(``--record-only`` records them again for the head on disk). tests/test_quality.py
checks that today's measurements and head still give those numbers: a change to the
measurements the head was not retrained on fails there, not silently in the ratings.

Needs, beside postselectd's own dependencies, the `onnx` package (build time only).
Evaluation on the real labelled photos: bench/eval_quality.py.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from postselectd.analysis import measure  # noqa: E402
from postselectd.analysis.runtime import OnnxModel  # noqa: E402

CLASSES = ("keeper", "out of focus", "motion blur", "overexposed", "underexposed")
VERSION = "1"
PCA_DIMS = 16
SEED = 20261127
WORK = 1024  # long side the synthetic previews are made at


def load_views(path: Path, rng: np.random.Generator) -> list[np.ndarray]:
    """Preview-like views of one photo, never upscaled by more than 1.5x.

    Every photo gives its whole frame at WORK px, or as it is when smaller (the runtime
    never upscales either); large photos also give native-resolution crops, which are
    sharp at the pixel level like a camera's preview.
    """
    with Image.open(path) as img:
        img = img.convert("RGB")
    long_side = max(img.size)
    scale = min(1.0, WORK / long_side)  # as measure.working_gray: never upscale
    whole = img.resize(
        (round(img.width * scale), round(img.height * scale)), Image.Resampling.LANCZOS
    )
    views = [np.asarray(whole)]
    if long_side >= 2 * WORK:
        cw, ch = (WORK, WORK * 2 // 3) if img.width >= img.height else (WORK * 2 // 3, WORK)
        for _ in range(3):
            x = int(rng.integers(0, img.width - cw + 1))
            y = int(rng.integers(0, img.height - ch + 1))
            views.append(np.asarray(img.crop((x, y, x + cw, y + ch))))
    return views


def camera_finish(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """What the camera adds after the optics: sensor noise, then JPEG compression."""
    noisy = noise(image, rng.uniform(0.5, 3.0), rng)
    buffer = io.BytesIO()
    Image.fromarray(noisy).save(buffer, "JPEG", quality=int(rng.integers(80, 96)))
    buffer.seek(0)
    with Image.open(buffer) as img:
        return np.asarray(img.convert("RGB"))


def disk(image: np.ndarray, radius: float) -> np.ndarray:
    """Defocus as a lens makes it: a uniform disk (bokeh), via FFT convolution."""
    h, w = image.shape[:2]
    r = int(np.ceil(radius))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    kernel = (xx**2 + yy**2 <= radius**2).astype(np.float32)
    kernel /= kernel.sum()
    pad = r + 1
    padded = np.pad(image.astype(np.float32), ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    H, W = padded.shape[:2]
    k = np.zeros((H, W), np.float32)
    k[: 2 * r + 1, : 2 * r + 1] = kernel
    k = np.roll(k, (-r, -r), axis=(0, 1))
    kf = np.fft.rfft2(k)
    out = np.stack(
        [np.fft.irfft2(np.fft.rfft2(padded[..., c]) * kf, s=(H, W)) for c in range(3)], -1
    )
    return np.clip(out[pad : pad + h, pad : pad + w] + 0.5, 0, 255).astype(np.uint8)


def exposure_shift(image: np.ndarray, ev: float) -> np.ndarray:
    linear = (image.astype(np.float32) / 255.0) ** 2.2 * (2.0**ev)
    return (np.clip(linear, 0, 1) ** (1 / 2.2) * 255 + 0.5).astype(np.uint8)


def gaussian(image: np.ndarray, sigma: float) -> np.ndarray:
    return np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius=sigma)))


def motion(image: np.ndarray, length: float, angle_deg: float) -> np.ndarray:
    pad = int(length) + 2
    padded = np.pad(image.astype(np.float32), ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    steps = max(2, int(length))
    a = np.deg2rad(angle_deg)
    acc = np.zeros_like(padded)
    for t in np.linspace(-length / 2, length / 2, steps):
        dx, dy = int(round(t * np.cos(a))), int(round(t * np.sin(a)))
        acc += np.roll(padded, (dy, dx), axis=(0, 1))
    acc /= steps
    return np.clip(acc[pad:-pad, pad:-pad] + 0.5, 0, 255).astype(np.uint8)


def noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    noisy = image.astype(np.float32) + rng.normal(0, sigma, image.shape)
    return np.clip(noisy + 0.5, 0, 255).astype(np.uint8)


def variants(image: np.ndarray, rng: np.random.Generator) -> list[tuple[int, np.ndarray]]:
    """(class index, image): keepers (as shot, or harmlessly changed), then one strong
    degradation of each kind; every variant then gets the camera's noise and JPEG."""

    def defocus() -> np.ndarray:
        if rng.random() < 0.6:
            return disk(image, rng.uniform(2.5, 8.0))
        return gaussian(image, rng.uniform(2.0, 6.0))

    optical = [
        (0, image),
        (0, exposure_shift(image, rng.uniform(-0.5, 0.5))),
        (0, gaussian(image, rng.uniform(0.3, 0.7))),
        (1, defocus()),
        (1, defocus()),
        (2, motion(image, rng.uniform(12, 45), rng.uniform(0, 180))),
        (2, motion(image, rng.uniform(12, 45), rng.uniform(0, 180))),
        (3, exposure_shift(image, rng.uniform(1.3, 2.6))),
        (4, exposure_shift(image, rng.uniform(-3.2, -1.5))),
    ]
    # Half of the variants get the camera's noise and JPEG after the optics.
    return [
        (label, camera_finish(img, rng) if rng.random() < 0.5 else img) for label, img in optical
    ]


def features_of(image: np.ndarray, backbone: OnnxModel) -> tuple[np.ndarray, np.ndarray]:
    measured = measure.measure_all(image).features
    embedding = backbone.run(backbone.prepare(image)[None])["embedding"][0]
    return measured, embedding.astype(np.float32)


def build_dataset(eval_dir: Path, cache: Path) -> dict[str, np.ndarray]:
    if cache.exists():
        return dict(np.load(cache))
    photos = natural_photos(eval_dir)
    backbone = OnnxModel(ROOT / "models" / "efficientnet_lite0.onnx", threads=2)
    rng = np.random.default_rng(SEED)
    X, E, y, group = [], [], [], []
    start = time.time()
    for index, name in enumerate(photos):
        for view in load_views(eval_dir / "natural" / name, rng):
            for label, variant in variants(view, rng):
                m, e = features_of(variant, backbone)
                X.append(m)
                E.append(e)
                y.append(label)
                group.append(index)
        if (index + 1) % 20 == 0 or index + 1 == len(photos):
            print(
                f"  features: {index + 1}/{len(photos)} photos, {time.time() - start:.0f} s",
                file=sys.stderr,
            )
    data = {
        "X": np.array(X, np.float32),
        "E": np.array(E, np.float32),
        "y": np.array(y, np.int64),
        "group": np.array(group, np.int64),
        "photos": np.array(photos),
    }
    np.savez(cache, **data)
    return data


class Head:
    """Standardize -> (features | PCA(embedding)) -> softmax regression -> temperature."""

    def fit(
        self, X: np.ndarray, E: np.ndarray, y: np.ndarray, l2: float, class_weight: np.ndarray
    ) -> Head:
        self.x_mean, self.x_std = X.mean(0), X.std(0) + 1e-6
        self.e_mean = E.mean(0)
        _, _, vt = np.linalg.svd(E - self.e_mean, full_matrices=False)
        self.pca = vt[:PCA_DIMS].T.astype(np.float32)  # 1280 x k
        z = self._design(X, E)
        self.z_mean, self.z_std = z.mean(0), z.std(0) + 1e-6
        z = (z - self.z_mean) / self.z_std
        n, d = z.shape
        k = len(CLASSES)
        W = np.zeros((d, k))
        b = np.zeros(k)
        onehot = np.eye(k)[y]
        weights = class_weight[y]
        m_w, v_w, m_b, v_b = 0.0, 0.0, 0.0, 0.0
        for step in range(1, 3001):  # Adam on the weighted, L2-regularized cross-entropy
            logits = z @ W + b
            logits -= logits.max(1, keepdims=True)
            p = np.exp(logits)
            p /= p.sum(1, keepdims=True)
            g = (p - onehot) * weights[:, None] / weights.sum()
            gW = z.T @ g + l2 * W
            gb = g.sum(0)
            m_w = 0.9 * m_w + 0.1 * gW
            v_w = 0.999 * v_w + 0.001 * gW**2
            m_b = 0.9 * m_b + 0.1 * gb
            v_b = 0.999 * v_b + 0.001 * gb**2
            lr = 0.05
            W -= lr * (m_w / (1 - 0.9**step)) / (np.sqrt(v_w / (1 - 0.999**step)) + 1e-8)
            b -= lr * (m_b / (1 - 0.9**step)) / (np.sqrt(v_b / (1 - 0.999**step)) + 1e-8)
        self.W, self.b, self.temperature = W, b, 1.0
        return self

    def _design(self, X: np.ndarray, E: np.ndarray) -> np.ndarray:
        xs = (X - self.x_mean) / self.x_std
        return np.hstack([xs, (E - self.e_mean) @ self.pca])

    def logits(self, X: np.ndarray, E: np.ndarray) -> np.ndarray:
        z = (self._design(X, E) - self.z_mean) / self.z_std
        return z @ self.W + self.b

    def proba(self, X: np.ndarray, E: np.ndarray) -> np.ndarray:
        logits = self.logits(X, E) / self.temperature
        logits -= logits.max(1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(1, keepdims=True)

    def calibrate(self, X: np.ndarray, E: np.ndarray, y: np.ndarray) -> None:
        """Temperature that minimises the held-out negative log-likelihood."""
        best = (np.inf, 1.0)
        for t in np.exp(np.linspace(np.log(0.25), np.log(8), 120)):
            self.temperature = t
            p = self.proba(X, E)
            nll = -np.log(p[np.arange(len(y)), y] + 1e-12).mean()
            best = min(best, (nll, t))
        self.temperature = best[1]


REFERENCE_NAME = "keeper_head_reference.json"
# How many training photos the reference records, and what is done to each: the same
# degradations as variants(), with fixed strengths instead of random ones.
REFERENCE_PHOTOS = 2
REFERENCE_CASES = {
    "as shot": (0, lambda image: image),
    "defocus disk r=5": (1, lambda image: disk(image, 5.0)),
    "motion 30 px at 30 deg": (2, lambda image: motion(image, 30.0, 30.0)),
    "exposure +2 EV": (3, lambda image: exposure_shift(image, 2.0)),
    "exposure -2.5 EV": (4, lambda image: exposure_shift(image, -2.5)),
}


def split_photos(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Photo indices for training, calibration and test: by photo, never by variant."""
    photos = np.random.default_rng(SEED).permutation(n)
    return photos[2 * (n // 5) :], photos[n // 5 : 2 * (n // 5)], photos[: n // 5]


def natural_photos(eval_dir: Path) -> list[str]:
    rows = list(csv.DictReader((eval_dir / "natural" / "labels.tsv").open(), delimiter="\t"))
    return [r["file"] for r in rows if r["label"].startswith("natural_photo")]


def reference_views(eval_dir: Path) -> list[tuple[str, str, int, np.ndarray]]:
    """(photo, case, class index, image): the first training photos' whole views (as
    load_views makes them), each as shot and with each kind of fixed degradation."""
    photos = natural_photos(eval_dir)
    train, _, _ = split_photos(len(photos))
    found = []
    for index in sorted(train)[:REFERENCE_PHOTOS]:
        name = photos[index]
        whole = load_views(eval_dir / "natural" / name, np.random.default_rng(SEED))[0]
        for case, (label, degrade) in REFERENCE_CASES.items():
            found.append((name, case, label, degrade(whole)))
    return found


def record_reference(eval_dir: Path, head_path: Path) -> Path:
    """What the training code measures on reference_views() and what the head says."""
    from postselectd.analysis import KeeperHead

    backbone = OnnxModel(ROOT / "models" / "efficientnet_lite0.onnx", threads=1)
    head = KeeperHead(head_path, 1, ["CPUExecutionProvider"])
    cases = []
    for name, case, label, image in reference_views(eval_dir):
        measured, embedding = features_of(image, backbone)
        probabilities = head.classify(measured, embedding)
        cases.append(
            {
                "photo": f"natural/{name}",
                "case": case,
                "class": CLASSES[label],
                "measurements": [round(float(v), 6) for v in measured],
                "embedding_first8": [round(float(v), 6) for v in embedding[:8]],
                "embedding_l2": round(float(np.linalg.norm(embedding)), 6),
                "class_probabilities": [round(float(v), 6) for v in probabilities.values()],
            }
        )
    doc = {
        "model": head_path.name,
        "model_bytes": head_path.stat().st_size,
        "features": list(measure.FEATURE_NAMES),
        "classes": list(CLASSES),
        "views": f"load_views()'s whole view of the first {REFERENCE_PHOTOS} training photos "
        "(split_photos), each as shot and degraded as named (variants()' functions)",
        "cases": cases,
    }
    path = head_path.with_name(REFERENCE_NAME)
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path


def keeper_metrics(p_keep: np.ndarray, is_keeper: np.ndarray, threshold: float = 0.5) -> dict:
    order = np.argsort(-p_keep)
    ranks = np.empty(len(p_keep))
    ranks[order] = np.arange(len(p_keep))
    pos, neg = is_keeper.sum(), (~is_keeper).sum()
    auc = (
        1.0 - (ranks[is_keeper].sum() - pos * (pos - 1) / 2) / (pos * neg)
        if pos and neg
        else float("nan")
    )
    bins = np.linspace(0, 1, 11)
    ece = 0.0
    for lo, hi in zip(bins[:-1], bins[1:], strict=True):
        inside = (p_keep >= lo) & (p_keep < hi if hi < 1 else p_keep <= hi)
        if inside.any():
            ece += inside.mean() * abs(p_keep[inside].mean() - is_keeper[inside].mean())
    high = p_keep >= 0.9
    return {
        "auc": round(float(auc), 4),
        "ece": round(float(ece), 4),
        "keeper_recall_at_0.30": round(float((p_keep[is_keeper] >= 0.30).mean()), 4),
        "share_at_or_above_0.90": round(float(high.mean()), 4),
        "keeper_rate_at_or_above_0.90": round(float(is_keeper[high].mean()), 4)
        if high.any()
        else None,
    }


def export_onnx(head: Head, path: Path, metrics: dict) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nf = len(measure.FEATURE_NAMES)

    def const(name: str, value: np.ndarray):
        return numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)

    inits = [
        const("x_mean", head.x_mean),
        const("x_std", head.x_std),
        const("e_mean", head.e_mean),
        const("pca", head.pca),
        const("z_mean", head.z_mean),
        const("z_std", head.z_std),
        const("W", head.W / head.temperature),
        const("b", head.b / head.temperature),
    ]
    nodes = [
        helper.make_node("Sub", ["features", "x_mean"], ["xc"]),
        helper.make_node("Div", ["xc", "x_std"], ["xs"]),
        helper.make_node("Sub", ["embedding", "e_mean"], ["ec"]),
        helper.make_node("MatMul", ["ec", "pca"], ["ep"]),
        helper.make_node("Concat", ["xs", "ep"], ["z0"], axis=1),
        helper.make_node("Sub", ["z0", "z_mean"], ["zc"]),
        helper.make_node("Div", ["zc", "z_std"], ["z"]),
        helper.make_node("MatMul", ["z", "W"], ["zw"]),
        helper.make_node("Add", ["zw", "b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["class_probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "keeper_head",
        [
            helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", nf]),
            helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 1280]),
        ],
        [
            helper.make_tensor_value_info(
                "class_probabilities", TensorProto.FLOAT, ["batch", len(CLASSES)]
            )
        ],
        inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="postselectd"
    )
    model.ir_version = 8
    props = {
        "postselectd.name": "keeper_head",
        "postselectd.version": VERSION,
        "postselectd.task": "keeper-probability",
        "postselectd.classes": json.dumps(CLASSES),
        "postselectd.features": json.dumps(measure.FEATURE_NAMES),
        "postselectd.embedding": "efficientnet_lite0",
        "postselectd.training": "synthetic degradations of ../shared/eval/natural "
        "(models/train_default.py)",
        "postselectd.metrics": json.dumps(metrics),
        "postselectd.license": "Apache-2.0",
    }
    helper.set_model_props(model, props)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("eval_dir", type=Path, help="../shared/eval")
    parser.add_argument("--out", type=Path, default=ROOT / "models" / "keeper_head.onnx")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/postselectd-train-default.npz"))
    parser.add_argument(
        "--record-only",
        action="store_true",
        help=f"only write models/{REFERENCE_NAME} for the head at --out",
    )
    args = parser.parse_args()
    if args.record_only:
        print(f"wrote {record_reference(args.eval_dir, args.out)}")
        return 0

    data = build_dataset(args.eval_dir, args.cache)
    X, E, y, group = data["X"], data["E"], data["y"], data["group"]
    n = len(np.unique(group))
    _, calib_ids, test_ids = split_photos(n)
    test = np.isin(group, test_ids)
    calib = np.isin(group, calib_ids)
    train = ~(test | calib)
    counts = np.bincount(y[train], minlength=len(CLASSES)).astype(float)
    # Recall first: all keepers together weigh twice as much as all rejects together, and
    # the four reject classes weigh the same among themselves.
    class_weight = np.empty(len(CLASSES))
    class_weight[0] = 2.0 / counts[0]
    class_weight[1:] = 1.0 / ((len(CLASSES) - 1) * np.maximum(counts[1:], 1))

    head = Head().fit(X[train], E[train], y[train], l2=1e-3, class_weight=class_weight)
    head.calibrate(X[calib], E[calib], y[calib])
    p = head.proba(X[test], E[test])
    metrics = keeper_metrics(p[:, 0], y[test] == 0)
    metrics["class_accuracy"] = round(float((p.argmax(1) == y[test]).mean()), 4)
    metrics["temperature"] = round(float(head.temperature), 3)
    metrics["photos"] = {"train": int(n - 2 * (n // 5)), "calibration": n // 5, "test": n // 5}
    metrics["samples"] = {
        "train": int(train.sum()),
        "calibration": int(calib.sum()),
        "test": int(test.sum()),
    }
    confusion = np.zeros((len(CLASSES), len(CLASSES)), int)
    for truth, guess in zip(y[test], p.argmax(1), strict=True):
        confusion[truth, guess] += 1
    print(json.dumps(metrics, indent=2))
    print("confusion (rows truth, columns predicted):", CLASSES)
    print(confusion)
    export_onnx(head, args.out, metrics)
    print(f"wrote {args.out}")
    print(f"wrote {record_reference(args.eval_dir, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
