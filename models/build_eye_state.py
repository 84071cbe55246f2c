#!/usr/bin/env python3
"""Train the eye-state model (models/eye_state.onnx): P(closed) of one eye crop.

The crop is the one the iris model reads (FaceAnalyzer._eye_crop: 64 x 64 RGB, corners
level, the eye's width 1/2.3 of the crop, the image-right eye mirrored), so the runtime
feeds the same tensor to both models and makes no second crop. The network turns it grey,
normalizes its contrast and reads it with seven 3x3 convolutions (32-64-128 channels,
~430 k weights; version 1 had four, 61 k weights); it answers for one eye. "Cannot
tell" (too few pixels) is decided outside, by the eye's width in the image
(postselectd.analysis.faces.EYE_STATE_MIN_WIDTH_PX).

Data: real eyes only, listed in models/eye_data_manifest.tsv.gz and rebuilt by
models/build_eye_data.py into /work/data/eyes/crops.npz (faces through the project's face
chain; eye-only patches framed as at run time). Split by identity (train / val / test).
Augmented on the fly: flips, small rotation / scale / shift (landmark jitter), brightness,
contrast and gamma, blur, sensor noise, downscale-upscale to an eye of 5-30 px (small
faces), JPEG.

    /work/venv-torch/bin/python models/build_eye_state.py --data /work/data/eyes

Needs torch 2.13.0 CPU, onnx and onnxruntime (models/requirements-convert-torch.txt), in a
venv of its own: none of it is a runtime dependency. Pinned: seed, data (the manifest's
sha256 is checked against crops.npz and written into the model's metadata), torch version.
Writes models/eye_state.onnx and its entry in models/reference_outputs.json.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from build_models import (  # noqa: E402
    OPSET,
    SYNTHETIC_DOC,
    finish_onnx,
    reference_for,
)

NAME = "eye_state"
VERSION = "2"
SEED = 20261205
TORCH_VERSION = "2.13.0"
SIZE = 64
EPOCHS = 40
STEPS = 80  # per epoch: 40 x 80 x 128 = 410 k augmented eyes, ~27 passes over train
BATCH = 128
# Channels at 32, 16 and 8 px, two 3x3 convolutions at each (version 1: one convolution at
# each of 16-32-64-64 channels, 61 k weights, read doubtful one eye of 14 closed faces of
# eval/eyes-face whose other eye it was sure of).
WIDTHS = (32, 64, 128)
# Each class weighs the same in training, and within a class faces and patches do.
LUMA = (0.299, 0.587, 0.114)


def build_net():
    import torch
    from torch import nn

    def block(cin: int, cout: int, stride: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )

    class EyeState(nn.Module):
        """RGB 0..1 -> grey, contrast-normalized -> 7 convolutions -> P(closed)."""

        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("luma", torch.tensor(LUMA).view(1, 3, 1, 1))
            self.features = nn.Sequential(
                block(1, WIDTHS[0], 2),  # 32
                block(WIDTHS[0], WIDTHS[0], 1),
                block(WIDTHS[0], WIDTHS[1], 2),  # 16
                block(WIDTHS[1], WIDTHS[1], 1),
                block(WIDTHS[1], WIDTHS[2], 2),  # 8
                block(WIDTHS[2], WIDTHS[2], 1),
                block(WIDTHS[2], WIDTHS[2], 2),  # 4
            )
            self.dropout = nn.Dropout(0.3)
            self.head = nn.Linear(WIDTHS[2], 1)

        def logits(self, image: torch.Tensor) -> torch.Tensor:
            grey = (image * self.luma).sum(1, keepdim=True)
            mean = grey.mean((2, 3), keepdim=True)
            std = ((grey - mean) ** 2).mean((2, 3), keepdim=True).sqrt()
            x = (grey - mean) / (std + 0.02)
            x = self.features(x).mean((2, 3))
            return self.head(self.dropout(x))

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.logits(image))

    return EyeState()


# ----------------------------------------------------------------------------- data


def load_data(data: Path) -> dict:
    from build_eye_data import manifest_sha256, read_manifest

    manifest_sha = manifest_sha256()
    rows = read_manifest()
    npz = np.load(data / "crops.npz")
    if str(npz["manifest_sha256"]) != manifest_sha:
        raise SystemExit(f"{data}/crops.npz was built from another manifest: rebuild it")
    index = npz["row"]
    split = np.array([rows[i]["split"] for i in index])
    kind = np.array([rows[i]["kind"] for i in index])
    source = np.array([rows[i]["source"].split("@")[0] + ":" + rows[i]["path"] for i in index])
    return {
        "crops": npz["crops"],
        "closed": npz["closed"].astype(np.float32),
        "width": npz["eye_width"],
        "split": split,
        "kind": kind,
        "source": source,
        "manifest_sha256": manifest_sha,
        "rows": len(rows),
    }


def sample_weights(closed: np.ndarray, kind: np.ndarray) -> np.ndarray:
    weights = np.zeros(len(closed))
    groups = [(c, k) for c in (0, 1) for k in ("face", "patch")]
    for c, k in groups:
        member = (closed == c) & (kind == k)
        if member.any():
            weights[member] = 1.0 / member.sum()
    return weights / weights.sum()


def augment(batch: np.ndarray, rng: np.random.Generator):
    """uint8 N x 64 x 64 x 3 -> float tensor N x 3 x 64 x 64 in 0..1, varied as cameras and
    the face chain vary it."""
    import torch
    import torch.nn.functional as F
    from PIL import Image

    n = len(batch)
    x = torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255.0
    # Landmark jitter: rotation, scale, shift.
    angle = torch.from_numpy(rng.uniform(-0.2, 0.2, n)).float()
    # Zoom: the eye 0.8-1.5 x its framed size (landmark error, tight eye-only close-ups).
    scale = torch.from_numpy(np.exp(rng.uniform(np.log(0.8), np.log(1.5), n))).float()
    shift = torch.from_numpy(rng.uniform(-0.07, 0.07, (n, 2))).float()
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    )
    flip = torch.from_numpy(rng.random(n) < 0.5)
    theta[flip, 0, :2] *= -1
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # Small eyes: read at 2.3 x (5..30 px) and brought back to 64 px, as a small face is.
    small = rng.random(n) < 0.5
    sides = np.round(2.3 * rng.choice([5.0, 6.0, 7.0, 8.0, 10.0, 12.0, 15.0, 20.0, 25.0], n))
    for side in np.unique(sides[small]):
        pick = torch.from_numpy(small & (sides == side))
        if side < SIZE:
            low = F.interpolate(x[pick], size=(int(side), int(side)), mode="area")
            x[pick] = F.interpolate(low, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    # Defocus / motion softness.
    sigma = rng.choice([0.5, 0.8, 1.1, 1.5], n)
    soft = rng.random(n) < 0.3
    for s in np.unique(sigma[soft]):
        pick = torch.from_numpy(soft & (sigma == s))
        radius = int(np.ceil(2.5 * s))
        t = torch.arange(-radius, radius + 1).float()
        k = torch.exp(-(t**2) / (2 * s * s))
        k = k / k.sum()
        y = x[pick]
        y = F.conv2d(
            F.pad(y, (radius, radius, 0, 0), mode="replicate"),
            k.view(1, 1, 1, -1).repeat(3, 1, 1, 1),
            groups=3,
        )
        y = F.conv2d(
            F.pad(y, (0, 0, radius, radius), mode="replicate"),
            k.view(1, 1, -1, 1).repeat(3, 1, 1, 1),
            groups=3,
        )
        x[pick] = y
    # Light: contrast, brightness, gamma, colour cast.
    contrast = torch.from_numpy(rng.uniform(0.55, 1.45, (n, 1, 1, 1))).float()
    bright = torch.from_numpy(rng.uniform(-0.15, 0.15, (n, 1, 1, 1))).float()
    cast = torch.from_numpy(rng.uniform(0.9, 1.1, (n, 3, 1, 1))).float()
    mean = x.mean((1, 2, 3), keepdim=True)
    x = ((x - mean) * contrast + mean + bright) * cast
    gamma = torch.from_numpy(rng.uniform(0.7, 1.4, (n, 1, 1, 1))).float()
    x = x.clamp(0, 1) ** gamma
    noise = torch.from_numpy(rng.uniform(0, 0.03, (n, 1, 1, 1))).float()
    x = (x + noise * torch.randn_like(x)).clamp(0, 1)
    # JPEG.
    for i in np.flatnonzero(rng.random(n) < 0.3):
        pixels = (x[i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "JPEG", quality=int(rng.integers(25, 90)))
        buffer.seek(0)
        with Image.open(buffer) as img:
            decoded = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
        x[i] = torch.from_numpy(decoded).permute(2, 0, 1)
    return x


def plain(batch: np.ndarray):
    import torch

    return torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255.0


def predict(net, crops: np.ndarray) -> np.ndarray:
    import torch

    net.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(crops), 512):
            out.append(net(plain(crops[start : start + 512])).numpy().reshape(-1))
    return np.concatenate(out) if out else np.zeros(0)


def metrics(p: np.ndarray, closed: np.ndarray) -> dict:
    decided = p >= 0.5
    return {
        "n": int(len(p)),
        "accuracy": round(float((decided == (closed == 1)).mean()), 4),
        "closed_caught": round(float(decided[closed == 1].mean()), 4),
        "open_called_closed": round(float(decided[closed == 0].mean()), 4),
        "open_at_p_0_8": round(float((p[closed == 0] >= 0.8).mean()), 4),
        "closed_at_p_0_8": round(float((p[closed == 1] >= 0.8).mean()), 4),
    }


def train(data: dict, threads: int) -> tuple[object, dict]:
    import torch

    torch.manual_seed(SEED)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(SEED)
    net = build_net()
    tr = data["split"] == "train"
    va = data["split"] == "val"
    crops, closed = data["crops"][tr], data["closed"][tr]
    weights = sample_weights(closed, data["kind"][tr])
    steps = STEPS
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=3e-3, total_steps=EPOCHS * steps, pct_start=0.15
    )
    loss_fn = torch.nn.BCEWithLogitsLoss()
    best, best_state, history = -1.0, None, []
    for epoch in range(EPOCHS):
        net.train()
        start, total = time.time(), 0.0
        for _ in range(steps):
            pick = rng.choice(len(crops), BATCH, p=weights)
            x = augment(crops[pick], rng)
            y = torch.from_numpy(closed[pick]).view(-1, 1)
            # Label smoothing: real labels are a little noisy (half-shut blinks, squints).
            loss = loss_fn(net.logits(x), y * 0.96 + 0.02)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach())
        p = predict(net, data["crops"][va])
        m = metrics(p, data["closed"][va])
        # Balanced accuracy on val: the class sizes differ.
        score = 1 - (m["open_called_closed"] + 1 - m["closed_caught"]) / 2
        history.append({"epoch": epoch, "loss": round(total / steps, 4), **m})
        print(
            f"epoch {epoch:2d} loss {total / steps:.4f} val acc {m['accuracy']:.4f} "
            f"caught {m['closed_caught']:.4f} false {m['open_called_closed']:.4f} "
            f"({time.time() - start:.0f} s)",
            flush=True,
        )
        if score >= best and epoch >= EPOCHS // 2:
            best = score
            best_state = {k: v.clone() for k, v in net.state_dict().items()}
    net.load_state_dict(best_state)
    net.eval()
    return net, {"history": history}


# ----------------------------------------------------------------------------- export


def export(net, data: dict, out: Path, report: dict) -> None:
    import onnx
    import torch

    outputs = {
        "closed_probability": {
            "shape": ["batch", 1],
            "meaning": "P(the eye is closed), 0..1, one row per eye crop",
        }
    }
    meta = {
        "postselectd.name": NAME,
        "postselectd.version": VERSION,
        "postselectd.task": "eye-state",
        "postselectd.input_name": "image",
        "postselectd.input_size": f"{SIZE}x{SIZE}",
        "postselectd.layout": "NCHW",
        "postselectd.color": "RGB",
        "postselectd.normalization": "mean=0.0;std=255.0",
        "postselectd.batch": "dynamic",
        "postselectd.fit": "roi",
        "postselectd.roi": (
            "the iris model's crop: eye corners (mesh 33/133 image-left eye, 362/263 "
            "image-right eye) level, square of 2.3 x the corner distance centred between "
            "them, image-right eye mirrored (FaceAnalyzer._eye_crop); eye-only patches: "
            "black-padded so 70% of the patch width is the eye (eye_patch_crops)"
        ),
        "postselectd.outputs": json.dumps(outputs, sort_keys=True),
        "postselectd.source": (
            f"torch=={TORCH_VERSION} (CPU) training by models/build_eye_state.py, seed {SEED}"
        ),
        "postselectd.source_sha256": f"eye_data_manifest.tsv:{data['manifest_sha256']}",
        "postselectd.upstream": "postselectd (own weights)",
        "postselectd.license": "Apache-2.0",
        "postselectd.training_data": (
            "real eyes: CEW closed faces and UTKFace faces through postselectd's face chain, "
            "CEW 24x24 eye patches (models/eye_data_manifest.tsv.gz)"
        ),
        "postselectd.metrics": json.dumps(report["metrics"], sort_keys=True),
        "postselectd.description": "P(closed) of one eye crop (the iris model's 64x64 ROI)",
    }
    path = out / f"{NAME}.onnx"
    tmp = out / f"{NAME}.tmp.onnx"
    torch.onnx.export(
        net,
        (torch.zeros(1, 3, SIZE, SIZE),),
        str(tmp),
        dynamo=False,
        opset_version=OPSET,
        input_names=["image"],
        output_names=["closed_probability"],
        dynamic_axes={"image": {0: "batch"}, "closed_probability": {0: "batch"}},
        do_constant_folding=True,
    )
    model = onnx.load(str(tmp))
    tmp.unlink()
    finish_onnx(model, path, meta, {})

    from build_models import ort_session

    sess = ort_session(path)
    x = plain(data["crops"][:64]).numpy()
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    got = sess.run(None, {"image": x})[0]
    diff = float(np.abs(got - want).max())
    if diff > 1e-4:
        raise SystemExit(f"onnxruntime differs from torch by {diff}")
    ref, latency, _ = reference_for(path, meta)
    two = np.zeros((2, 3, SIZE, SIZE), np.float32)
    from build_models import latency_ms

    reference = json.loads((out / "reference_outputs.json").read_text())
    reference["models"][NAME] = {
        "file": path.name,
        "file_bytes": path.stat().st_size,
        "latency_ms_b1_1thread": latency,
        "latency_ms_b2_1thread": latency_ms(sess, {"image": two}),
        "outputs": ref,
        "verification": {
            "framework": f"torch {TORCH_VERSION} CPU (own training)",
            "max_abs_diff_torch_vs_onnxruntime": diff,
        },
    }
    reference.setdefault("synthetic_input", SYNTHETIC_DOC)
    (out / "reference_outputs.json").write_text(
        json.dumps(reference, indent=1, sort_keys=True) + "\n"
    )
    print(f"{path.name}: {path.stat().st_size} bytes, {latency} ms b1, torch vs ort {diff:.1e}")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, default=Path("/work/data/eyes"))
    ap.add_argument("--out", type=Path, default=HERE)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import torch

    if not torch.__version__.startswith(TORCH_VERSION):
        raise SystemExit(f"needs torch {TORCH_VERSION}, found {torch.__version__}")
    data = load_data(args.data)
    counts = {
        split: {
            "closed": int(((data["split"] == split) & (data["closed"] == 1)).sum()),
            "open": int(((data["split"] == split) & (data["closed"] == 0)).sum()),
        }
        for split in ("train", "val", "test")
    }
    print(f"eyes: {counts}")
    net, report = train(data, args.threads)
    te = data["split"] == "test"
    p = predict(net, data["crops"][te])
    report["metrics"] = {
        "test": metrics(p, data["closed"][te]),
        "test_faces": metrics(
            p[data["kind"][te] == "face"], data["closed"][te][data["kind"][te] == "face"]
        ),
        "test_patches": metrics(
            p[data["kind"][te] == "patch"], data["closed"][te][data["kind"][te] == "patch"]
        ),
        "eyes": counts,
    }
    print(json.dumps(report["metrics"], indent=1))
    torch.save(net.state_dict(), args.data / "eye_state.pt")
    export(net, data, args.out, report)
    (args.data / "train_report.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
