"""Eyes open or closed, before (the iris model's lid gap) and after (the eye-state model).

    python bench/eval_eyes.py ../shared/eval                       # from the repository root
    python bench/eval_eyes.py ../shared/eval --data /work/data/eyes  # + the width sweep
    python bench/eval_eyes.py ../shared/eval --why                   # + causes of the misses

Prints, for the geometric rule (mean lid gap / eye width < 0.20, 0.14 looking down) and the
learned model (models/eye_state.onnx; a face is closed at P >= EYES_CLOSED_PROBABILITY on
eyes at least EYE_STATE_MIN_WIDTH_PX wide):
- eval/eyes-crop: accuracy on the single-eye crops (open and closed; framed as the face
  chain frames an eye, read as is and mirrored; the model reads each framed again on the
  eye corners the iris model finds in it, FaceAnalyzer.eye_patch_crops),
- eval/eyes-face: closed faces called "eyes closed",
- eval/portraits: main faces with open eyes called "eyes closed" (every visible eye there is
  open), at native size and at half size,
- the sample NEFs' previews (0107, 0108 open; 0109, 0110 closed),
- with --data (models/build_eye_data.py's folder): on the held-out val + test identities
  (never the evaluation's), P(closed) against the eye's width in px, each eye crop read
  at 2.3 x that width and brought back to 64 px as a small face is; and the rule that joins
  a face's two eyes. This is where EYE_STATE_MIN_WIDTH_PX and EYES_CLOSED_PROBABILITY
  come from; the evaluation sets are only measured.
- the model's time per face (both eyes in one run, 1 thread).
- with --why: why each closed face of eval/eyes-face that the analysis does not reject
  (``postselectd.analysis._eyes`` at normal strictness) is not, as a table of causes, and
  the eye-crop misses by patch size, way and confidence, framed by guess and on the eye's
  own corners.
Thresholds come from postselectd.analysis.faces, never from here.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from postselectd.analysis import faces as F  # noqa: E402
from postselectd.analysis.runtime import models_dir  # noqa: E402
from postselectd.rating import LINES  # noqa: E402


def rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def labels(folder: Path) -> list[tuple[str, str]]:
    with open(folder / "labels.tsv", newline="") as fh:
        return [(r["file"], r["label"]) for r in csv.DictReader(fh, delimiter="\t")]


def geometric_closed(face: F.Face) -> bool:
    """The rule before the model (faces.py at 3568b71)."""
    if face.left_eye_openness is None or face.right_eye_openness is None:
        return False
    limit = F.EYES_CLOSED_BELOW_LOOKING_DOWN if face.looking_down else F.EYES_CLOSED_BELOW
    return (face.left_eye_openness + face.right_eye_openness) / 2 < limit


def model_closed(face: F.Face) -> bool:
    p = face.eyes_closed_probability
    return p is not None and p >= F.EYES_CLOSED_PROBABILITY


def eyes_crop(fa: F.FaceAnalyzer, folder: Path) -> list[str]:
    before, after, confident_wrong, n = 0, 0, 0, 0
    for name, label in labels(folder):
        closed = label == "eyes_closed"
        image = rgb(folder / name)
        before += (fa.eye_crop_openness(image) < F.EYES_CLOSED_BELOW) == closed
        p = fa.eye_crop_closed_probability(image)
        after += (p >= 0.5) == closed
        confident_wrong += (p >= F.EYES_CLOSED_PROBABILITY) if not closed else (p < 0.2)
        n += 1
    return [
        f"eyes-crop   accuracy (open and closed, n={n})   before {before / n:.3f}   "
        f"after {after / n:.3f} (P >= 0.5)   confidently wrong after {confident_wrong}   "
        "target >= 0.97"
    ]


def eyes_face(fa: F.FaceAnalyzer, folder: Path) -> list[str]:
    items = [f for f, label in labels(folder) if label == "eyes_closed"]
    before = after = doubtful = found = told = 0
    for name in items:
        faces = [f for f in fa.analyze(rgb(folder / name)) if f.is_main_subject]
        found += bool(faces)
        before += any(geometric_closed(f) for f in faces)
        after += any(model_closed(f) for f in faces)
        doubtful += any((f.eyes_closed_probability or 0.0) >= 0.5 for f in faces)
        told += any(f.eyes_closed_probability is not None for f in faces)
    n = len(items)
    return [
        f"eyes-face   closed faces -> 'eyes closed' (n={n}, face found {found}, both eyes big "
        f"enough {told})   before {before / n:.3f}   after {after / n:.3f} "
        f"(P >= 0.5: {doubtful / n:.3f})   target >= 0.95"
    ]


def portraits(fa: F.FaceAnalyzer, folder: Path) -> list[str]:
    lines = []
    for shrink in (1.0, 0.5):
        photos_before = photos_after = faces_before = faces_after = faces_n = no_verdict = 0
        doubtful = 0
        worst = []
        for name, label in labels(folder):
            if label != "portrait_or_group_photo":
                continue
            with Image.open(folder / name) as im:
                picture = im.convert("RGB")
            if shrink != 1.0:
                size = (round(picture.width * shrink), round(picture.height * shrink))
                picture = picture.resize(size, Image.Resampling.LANCZOS)
            main = [f for f in fa.analyze(picture) if f.is_main_subject]
            b = sum(geometric_closed(f) for f in main)
            a = sum(model_closed(f) for f in main)
            photos_before += b > 0
            photos_after += a > 0
            faces_before += b
            faces_after += a
            faces_n += len(main)
            no_verdict += sum(f.eyes_closed_probability is None for f in main)
            doubtful += sum((f.eyes_closed_probability or 0.0) >= 0.5 for f in main)
            told = [f.eyes_closed_probability for f in main if f.eyes_closed_probability]
            if told:
                worst.append((max(told), name))
        worst.sort(reverse=True)
        lines.append(
            f"portraits x{shrink:.1f} open eyes -> 'eyes closed': photos before {photos_before}/11"
            f" after {photos_after}/11; main faces before {faces_before}/{faces_n} after "
            f"{faces_after}/{faces_n} (P >= 0.5: {doubtful}; no verdict: {no_verdict})   "
            "target: none"
        )
        lines.append(
            "              highest P(closed): "
            + ", ".join(f"{name} {p:.2f}" for p, name in worst[:3])
        )
    return lines


def nefs(fa: F.FaceAnalyzer, samples: Path) -> list[str]:
    if not samples.is_dir():
        return ["nef         ../shared/samples/nef not found"]
    from postselectd.preview import load_preview

    lines = []
    for stem, truth in (
        ("DSC_0107", "open"),
        ("DSC_0108", "open"),
        ("DSC_0109", "closed"),
        ("DSC_0110", "closed"),
    ):
        main = [
            f
            for f in fa.analyze(load_preview(samples / f"{stem}.NEF").picture)
            if f.is_main_subject
        ]
        before = sum(geometric_closed(f) for f in main)
        after = sum(model_closed(f) for f in main)
        probabilities = " ".join(
            "-" if f.eyes_closed_probability is None else f"{f.eyes_closed_probability:.2f}"
            for f in main
        )
        lines.append(
            f"nef         {stem} ({truth}): main faces closed before {before}/{len(main)} "
            f"after {after}/{len(main)}   P(closed) {probabilities}"
        )
    return lines


def downscaled(crops: np.ndarray, width: float) -> np.ndarray:
    """Each 64 px crop as if its eye were ``width`` px wide in the photo: read at 2.3 x width
    px (box filter), brought back to 64 px (bilinear), as _sample does for a small face."""
    side = max(2, round(width * F.EYE_CROP_SCALE))
    out = np.empty_like(crops)
    for i, crop in enumerate(crops):
        small = Image.fromarray(crop).resize((side, side), Image.Resampling.BOX)
        out[i] = np.asarray(small.resize(crop.shape[:2][::-1], Image.Resampling.BILINEAR))
    return out


def held_out(fa: F.FaceAnalyzer, data: Path) -> list[str]:
    npz = np.load(data / "crops.npz")
    sys.path.insert(0, str(ROOT / "models"))
    from build_eye_data import read_manifest

    rows = read_manifest()
    split = np.array([rows[i]["split"] for i in npz["row"]])
    kind = np.array([rows[i]["kind"] for i in npz["row"]])
    keep = np.isin(split, ["val", "test"]) & (kind == "face") & (npz["eye_width"] >= 20)
    crops, closed = npz["crops"][keep], npz["closed"][keep] == 1
    lines = [
        f"held-out    val+test face eyes >= 20 px wide: {closed.sum()} closed, "
        f"{(~closed).sum()} open; P(closed) read as if the eye were W px wide:"
    ]
    for width in (4, 5, 6, 7, 8, 10, 12, 16, 20, 0):
        p = fa.closed_probability(crops if width == 0 else downscaled(crops, width))
        acc = ((p >= 0.5) == closed).mean()
        caught = (p[closed] >= F.EYES_CLOSED_PROBABILITY).mean()
        false = (p[~closed] >= F.EYES_CLOSED_PROBABILITY).mean()
        lines.append(
            f"              W {'native' if width == 0 else f'{width:>2d} px':>6s}  accuracy "
            f"{acc:.3f}   closed at P>={F.EYES_CLOSED_PROBABILITY} {caught:.3f}   open at "
            f"P>={F.EYES_CLOSED_PROBABILITY} {false:.4f}"
        )
    # Joining a face's two eyes (both eyes of one face are consecutive rows 1, 2).
    eye = npz["eye"]
    faces = [
        i
        for i in range(len(eye) - 1)
        if eye[i] == 1 and eye[i + 1] == 2 and split[i] in ("val", "test") and kind[i] == "face"
    ]
    first = np.array(faces)
    pl = fa.closed_probability(npz["crops"][first])
    pr = fa.closed_probability(npz["crops"][first + 1])
    truth = npz["closed"][first] == 1
    for name, p in (
        ("mean", (pl + pr) / 2),
        ("min", np.minimum(pl, pr)),
        ("max", np.maximum(pl, pr)),
        ("join", np.array([F.join_eyes(a, b) for a, b in zip(pl, pr, strict=True)])),
    ):
        # 0.5, 0.8, 0.9, and the normal policy's reject and check lines (the analysis takes
        # the face's P as the "eyes closed" confidence).
        for t in sorted({0.5, 0.8, 0.9, *LINES["normal"]}):
            lines.append(
                f"              faces ({truth.sum()} closed, {(~truth).sum()} open) {name:4s} "
                f"of both eyes >= {t}: closed caught {(p[truth] >= t).mean():.3f}, open called "
                f"closed {(p[~truth] >= t).mean():.4f}"
            )
    return lines


def why_not_rejected(fa: F.FaceAnalyzer, folder: Path) -> list[str]:
    """The cause for each closed face the analysis does not reject (its largest main face)."""
    from postselectd import analysis as A

    reject_from = LINES["normal"][0]
    causes: dict[str, list[str]] = {}
    for name, label in labels(folder):
        if label != "eyes_closed":
            continue
        main = [f for f in fa.analyze(rgb(folder / name)) if f.is_main_subject]
        finding = A._eyes(main)
        if finding is not None and finding.confidence >= reject_from:
            cause = "rejected"
        elif not main:
            cause = "no face found"
        else:
            face = max(main, key=lambda f: f.size)
            sides = (face.left_eye_closed_probability, face.right_eye_closed_probability)
            if face.score < A.EYES_MIN_DETECTION_SCORE:
                cause = f"detection score under {A.EYES_MIN_DETECTION_SCORE}"
            elif (face.eye_width or 0) < A.SMALL_EYES_PX and (
                face.score < A.SMALL_EYES_MIN_DETECTION_SCORE
            ):
                cause = f"eyes under {A.SMALL_EYES_PX:.0f} px on a face under "
                cause += f"{A.SMALL_EYES_MIN_DETECTION_SCORE}"
            elif None in sides:
                cause = f"an eye under {F.EYE_STATE_MIN_WIDTH_PX:.0f} px or outside the frame"
            elif len(main) >= A.GROUP_OF:
                cause = "a group: a check at most"
            elif abs(face.yaw) >= A.TURNED_YAW and min(sides) >= reject_from:
                cause = f"head turned >= {A.TURNED_YAW:.0f} deg: a check at most"
            elif max(sides) >= reject_from:
                cause = f"one eye >= {reject_from}, the other under it"
            else:
                cause = f"both eyes under {reject_from}"
        causes.setdefault(cause, []).append(name)
    lines = [f"why        closed faces of eval/eyes-face (reject from {reject_from}):"]
    for cause, names in sorted(causes.items(), key=lambda item: -len(item[1])):
        shown = "" if cause == "rejected" else "  " + " ".join(n[10:14] for n in names)
        lines.append(f"              {len(names):4d}  {cause}{shown}")
    return lines


def eye_crop_misses(fa: F.FaceAnalyzer, folder: Path) -> list[str]:
    """Eye-crop misses by patch size (CEW's 24 px patches, larger close-ups), which way and
    how sure, framed by guess (as training patches) and on the eye's own corners."""
    lines = ["why        eyes-crop misses (P >= 0.5 is closed; sure: P >= 0.75 or < 0.25):"]
    for on_corners in (False, True):
        misses: dict[str, int] = {}
        for name, label in labels(folder):
            eye = rgb(folder / name)
            crops = fa.eye_patch_crops(eye, on_eye_corners=on_corners)
            p = float(fa.closed_probability(np.stack(crops)).mean())
            closed = label == "eyes_closed"
            if (p >= 0.5) == closed:
                continue
            size = "24 px patch" if eye.shape[1] <= 30 else "larger patch"
            way = "closed read open" if closed else "open read closed"
            sure = "sure" if p >= 0.75 or p < 0.25 else "doubtful"
            key = f"{size}, {way}, {sure}"
            misses[key] = misses.get(key, 0) + 1
        framing = "on the eye's corners" if on_corners else "by guess (70% of the patch)"
        lines.append(f"              framed {framing}: {sum(misses.values())} wrong")
        lines += [f"                {n:3d}  {key}" for key, n in sorted(misses.items())]
    return lines


def timing(fa: F.FaceAnalyzer) -> list[str]:
    crops = np.zeros((2, 64, 64, 3), np.uint8)
    for _ in range(20):
        fa.closed_probability(crops)
    times = []
    for _ in range(200):
        start = time.perf_counter()
        fa.closed_probability(crops)
        times.append((time.perf_counter() - start) * 1000)
    size = (models_dir() / "eye_state.onnx").stat().st_size
    return [
        f"time        eye-state model, both eyes of one face in one run: median "
        f"{statistics.median(times):.3f} ms (1 thread); file {size:,} bytes   target < 1 ms"
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("eval", type=Path, help="../shared/eval")
    ap.add_argument("--data", type=Path, help="models/build_eye_data.py's folder")
    ap.add_argument("--why", action="store_true", help="causes of the misses")
    args = ap.parse_args()
    fa = F.FaceAnalyzer(models_dir(), threads=1)
    if fa.eye_state is None:
        print("no models/eye_state.onnx: nothing to compare")
        return 1
    lines = []
    lines += eyes_crop(fa, args.eval / "eyes-crop")
    lines += eyes_face(fa, args.eval / "eyes-face")
    lines += portraits(fa, args.eval / "portraits")
    lines += nefs(fa, args.eval.parent / "samples" / "nef")
    if args.data:
        lines += held_out(fa, args.data)
    if args.why:
        lines += why_not_rejected(fa, args.eval / "eyes-face")
        lines += eye_crop_misses(fa, args.eval / "eyes-crop")
    lines += timing(fa)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
