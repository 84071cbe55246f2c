#!/usr/bin/env python3
"""Rebuild the eye-state training data (real open and closed eyes) outside the repository.

The eye-state model (models/build_eye_state.py) learns from real eyes only, taken from
public repositories that re-host published face and eye sets; every file is listed in
models/eye_data_manifest.tsv.gz (repository@commit, path, sha256, licence, label, split).

    python models/build_eye_data.py --mirror /work/.mirror --out /work/data/eyes

reads each listed file from the bare git mirrors (``owner+name/repo``, as the search tool's
``fetch`` makes them), checks its sha256, writes it under OUT/files/, then makes OUT/crops.npz:
the 64 x 64 eye crops exactly as postselectd frames them at run time. Whole faces go through
the project's own face chain (FaceAnalyzer: detection, mesh, then the crop the iris model
reads); eye-only patches are framed as FaceAnalyzer.eye_patch_crops frames them.

``--write-manifest`` makes the manifest from the mirrors instead (done once; the manifest
is committed). It leaves out, besides files that fail to decode:
- every file whose sha256 is in ../shared/eval/RESERVED.sha256 (kept for acceptance),
- every file identical (sha256) to one of ../shared/eval (eyes-crop, eyes-face, portraits),
- every face that ../shared/eval shows in another form: the CEW face of an eval eye patch
  (and its other eye), the eye patches of an eval CEW face.
Faces (and the two eye patches of one CEW face, and an LFW person's photos) fall into one
split (train / val / test) by a hash of their identity, so no face is on two sides.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import io
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Gzipped (4.4 MB of text, mostly repeated licence lines); its fingerprint is the sha256 of
# the uncompressed text (manifest_sha256), written into crops.npz and the model's metadata.
MANIFEST = ROOT / "models" / "eye_data_manifest.tsv.gz"
FIELDS = ("source", "path", "sha256", "licence", "label", "kind", "identity", "split")

CEW = (
    "Closed Eyes In The Wild (CEW; F. Song, X. Tan, X. Liu, S. Chen, Pattern Recognition "
    "2014, NUAA): research use only"
)
UTK = (
    "UTKFace (Z. Zhang, Y. Song, H. Qi, CVPR 2017): non-commercial research only; "
    "copyright of the photos stays with their owners"
)
# (repository, commit, path regex, label, kind, licence). kind "face": a face photo read by
# the face chain; "patch": an eye-only crop.
SOURCES = (
    (
        "jesusmartinoza/Open-eyes-using-Pix2Pix",
        "41bd8f73e63c373d8812908a1ca0d44475115ccc",
        r"^closed_eyes_dataset/.+\.jpg$",
        "closed",
        "face",
        f"{CEW} (ClosedFace, re-hosted; host repo MIT for its code)",
    ),
    (
        "jesusmartinoza/Open-eyes-using-Pix2Pix",
        "41bd8f73e63c373d8812908a1ca0d44475115ccc",
        r"^regular_faces/.+\.jpg$",
        "open",
        "face",
        f"{UTK} (re-hosted; host repo MIT for its code)",
    ),
    (
        "tanaysh7/tensorflowjs_classifier",
        "d7d137087277597db56ab758fcbad7f5bc836e7a",
        r"^closed(Left|Right)Eyes/.+\.jpg$",
        "closed",
        "patch",
        f"{CEW} (24x24 eye patches, re-hosted; host repo Apache-2.0 for its code)",
    ),
    (
        "tanaysh7/tensorflowjs_classifier",
        "d7d137087277597db56ab758fcbad7f5bc836e7a",
        r"^open(Left|Right)Eyes/.+\.jpg$",
        "open",
        "patch",
        f"{CEW} (24x24 eye patches of LFW faces, re-hosted; host repo Apache-2.0)",
    ),
)
SPLITS = (("test", 0.10), ("val", 0.10), ("train", 0.80))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def git_dir(mirror: Path, repo: str) -> Path:
    return mirror / repo.replace("/", "+") / "repo"


def git_files(mirror: Path, repo: str, commit: str) -> list[str]:
    out = subprocess.run(
        ["git", "-C", str(git_dir(mirror, repo)), "ls-tree", "-r", "--name-only", commit],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.splitlines()


def git_blob(mirror: Path, repo: str, commit: str, path: str) -> bytes:
    return subprocess.run(
        ["git", "-C", str(git_dir(mirror, repo)), "show", f"{commit}:{path}"],
        check=True,
        capture_output=True,
    ).stdout


def identity(path: str) -> str:
    """Who is in the file: a CEW face and its two eye patches share one identity, and so do
    an LFW person's photos; a UTKFace photo is its own."""
    name = Path(path).stem
    if name.startswith("closed_eye_"):  # closed_eye_0021.jpg_face_1[_L]
        return "cew:" + re.sub(r"_[LR]$", "", name)
    if "Eyes/" in path:  # LFW: Al_Leiter_0001_R -> Al_Leiter
        return "lfw:" + re.sub(r"_\d+_[LR]$", "", name)
    return "utk:" + name


def split_of(who: str) -> str:
    value = int(hashlib.sha256(who.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    edge = 0.0
    for name, share in SPLITS:
        edge += share
        if value < edge:
            return name
    return SPLITS[-1][0]


def eval_exclusions(shared: Path) -> tuple[set[str], set[str]]:
    """sha256 of reserved and evaluation files, and identities the evaluation shows."""
    hashes = {
        line.split()[0].lower()
        for line in (shared / "eval" / "RESERVED.sha256").read_text().splitlines()
        if line.strip()
    }
    identities: set[str] = set()
    for folder in ("eyes-crop", "eyes-face", "portraits"):
        for path in (shared / "eval" / folder).iterdir():
            if path.is_file():
                hashes.add(sha256(path.read_bytes()))
        labels = shared / "eval" / folder / "labels.tsv"
        with labels.open(newline="") as f:
            for row in csv.DictReader(f, delimiter="\t"):
                source = row.get("source_path", "")
                if source:
                    identities.add(identity(source))
    return hashes, identities


def write_manifest(mirror: Path, shared: Path) -> None:
    hashes, identities = eval_exclusions(shared)
    rows = []
    dropped = {"reserved/eval sha256": 0, "eval identity": 0, "unreadable": 0}
    for repo, commit, pattern, label, kind, licence in SOURCES:
        for path in git_files(mirror, repo, commit):
            if not re.match(pattern, path):
                continue
            data = git_blob(mirror, repo, commit, path)
            digest = sha256(data)
            who = identity(path)
            if digest in hashes:
                dropped["reserved/eval sha256"] += 1
                continue
            if who in identities:
                dropped["eval identity"] += 1
                continue
            try:
                with Image.open(io.BytesIO(data)) as img:
                    img.convert("RGB").load()
            except Exception:
                dropped["unreadable"] += 1
                continue
            rows.append(
                {
                    "source": f"{repo}@{commit}",
                    "path": path,
                    "sha256": digest,
                    "licence": licence,
                    "label": label,
                    "kind": kind,
                    "identity": who,
                    "split": split_of(who),
                }
            )
    text = io.StringIO()
    writer = csv.DictWriter(text, FIELDS, delimiter="\t", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    with MANIFEST.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        f.write(text.getvalue().encode())
    print(f"{MANIFEST.name}: {len(rows)} files; left out: {dropped}")


def manifest_text() -> str:
    return gzip.decompress(MANIFEST.read_bytes()).decode()


def manifest_sha256() -> str:
    """The data's fingerprint: sha256 of the manifest's uncompressed text."""
    return sha256(manifest_text().encode())


def read_manifest() -> list[dict]:
    return list(csv.DictReader(io.StringIO(manifest_text()), delimiter="\t"))


def extract(mirror: Path, out: Path, rows: list[dict]) -> None:
    for row in rows:
        repo, commit = row["source"].split("@")
        target = out / "files" / repo.replace("/", "+") / row["path"]
        if target.is_file() and sha256(target.read_bytes()) == row["sha256"]:
            continue
        data = git_blob(mirror, repo, commit, row["path"])
        if sha256(data) != row["sha256"]:
            raise SystemExit(f"{row['source']}:{row['path']}: sha256 differs from the manifest")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def make_crops(out: Path, rows: list[dict], models: Path) -> None:
    """Eye crops as the runtime frames them; one row per eye."""
    from postselectd.analysis.faces import FaceAnalyzer

    analyzer = FaceAnalyzer(models)
    crops, labels, widths, rows_of, eyes = [], [], [], [], []
    no_face = 0
    start = time.time()
    for index, row in enumerate(rows):
        repo = row["source"].split("@")[0]
        path = out / "files" / repo.replace("/", "+") / row["path"]
        with Image.open(path) as img:
            picture = img.convert("RGB")
        label = 1 if row["label"] == "closed" else 0
        if row["kind"] == "patch":
            # The patch as it is (mirrored variants come from training's flips).
            crop = analyzer.eye_patch_crops(np.asarray(picture))[0]
            crops.append(crop)
            labels.append(label)
            widths.append(picture.size[0] * 0.7)
            rows_of.append(index)
            eyes.append(0)
            continue
        # Small faces are padded (a face filling the whole photo is missed otherwise).
        width, height = picture.size
        margin = max(width, height) // 2
        canvas = Image.new("RGB", (width + 2 * margin, height + 2 * margin), (0, 0, 0))
        canvas.paste(picture, (margin, margin))
        samples = analyzer.eye_samples(canvas)
        if not samples:
            no_face += 1
            continue
        _, pair = samples[0]  # the largest face: the one the photo is labelled for
        for eye, (crop, eye_width) in enumerate(pair):
            crops.append(crop)
            labels.append(label)
            widths.append(eye_width)
            rows_of.append(index)
            eyes.append(eye + 1)
        if index % 500 == 0:
            print(f"  {index}/{len(rows)} files, {time.time() - start:.0f} s", flush=True)
    np.savez_compressed(
        out / "crops.npz",
        crops=np.stack(crops).astype(np.uint8),
        closed=np.asarray(labels, dtype=np.uint8),
        eye_width=np.asarray(widths, dtype=np.float32),
        row=np.asarray(rows_of, dtype=np.int32),
        eye=np.asarray(eyes, dtype=np.uint8),  # 0 patch, 1 image-left eye, 2 image-right
        manifest_sha256=np.asarray(manifest_sha256()),
    )
    print(f"crops.npz: {len(crops)} eyes from {len(rows)} files ({no_face} faces not found)")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--mirror", type=Path, default=Path("/work/.mirror"))
    ap.add_argument("--out", type=Path, default=Path("/work/data/eyes"))
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    ap.add_argument("--models", type=Path, default=ROOT / "models")
    ap.add_argument("--write-manifest", action="store_true")
    args = ap.parse_args()
    if args.write_manifest:
        write_manifest(args.mirror, args.shared)
        return
    rows = read_manifest()
    extract(args.mirror, args.out, rows)
    make_crops(args.out, rows, args.models)


if __name__ == "__main__":
    main()
