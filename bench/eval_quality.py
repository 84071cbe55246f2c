#!/usr/bin/env python3
"""How good are the verdicts? Rerunnable evaluation on the labelled real photos.

    python bench/eval_quality.py ../shared/eval [--nef ../shared/samples/nef]

Runs every photo through postselectd's own preview -> analysis path (the same code as
`postselectd score`) and prints, per labelled set, counts and accuracy / recall / false
positive rates, ROC AUC where it applies, and a comparison row for the plain global
variance-of-Laplacian baseline many cullers use (with its best single threshold chosen
on the same data, i.e. an optimistic baseline).
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from postselectd.analysis import Analyzer, measure  # noqa: E402
from postselectd.preview import load_preview  # noqa: E402

BLUR_REASONS = {"out of focus", "motion blur"}


def labels(folder: Path) -> list[dict]:
    return list(csv.DictReader((folder / "labels.tsv").open(), delimiter="\t"))


def global_laplacian(image: np.ndarray) -> float:
    gray = measure.luminance(image)
    return float(measure.laplacian(gray).var())


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    pos, neg = scores[positive], scores[~positive]
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def best_threshold_accuracy(scores: np.ndarray, positive: np.ndarray) -> float:
    """Best accuracy of 'score >= t means positive' over all t (optimistic baseline)."""
    best = 0.0
    for t in np.unique(scores):
        best = max(best, float(((scores >= t) == positive).mean()))
    best = max(best, float((~positive).mean()))
    return best


class Evaluator:
    def __init__(self) -> None:
        self.analyzer = Analyzer()
        self.times: list[float] = []

    def analyze(self, path: Path):
        preview = load_preview(path)
        start = time.perf_counter()
        analysis = self.analyzer.analyze(preview.image)
        self.times.append((time.perf_counter() - start) * 1000)
        return preview, analysis


def said(analysis) -> str:
    """p and reasons, as the photographer would read them."""
    return f"p={analysis.keeper_probability:.2f} {list(analysis.reasons)}"


def row(name: str, value: str) -> None:
    print(f"  {name:<58}{value}")


def eval_blur(ev: Evaluator, folder: Path) -> dict:
    items = labels(folder)
    results = {}
    for item in items:
        preview, analysis = ev.analyze(folder / item["file"])
        results[item["file"]] = (item["label"], analysis, global_laplacian(preview.image))
    print(f"\nblur ({len(items)} photos)")
    triplets = [items[i : i + 3] for i in range(0, 9, 3)]
    ok_triplets = 0
    for triplet in triplets:
        sharp = next(t["file"] for t in triplet if t["label"] == "sharp")
        others = [t["file"] for t in triplet if t["file"] != sharp]
        p_sharp = results[sharp][1].keeper_probability
        ok = all(p_sharp > results[o][1].keeper_probability for o in others) and not (
            set(results[sharp][1].reasons) & BLUR_REASONS
        )
        ok_triplets += ok
        detail = ", ".join(
            f"{f}={results[f][0][:6]} {said(results[f][1])}" for f in [sharp, *others]
        )
        row(
            f"triplet {triplet[0]['file'][:9]}: sharp best, no blur reason",
            f"{'yes' if ok else 'NO'}  ({detail})",
        )
    blurred = [
        f
        for f, (label, _, _) in results.items()
        if "blurred" in label and "background" not in label
    ]
    flagged = [f for f in blurred if set(results[f][1].reasons) & BLUR_REASONS]
    row("triplets where the sharp frame wins", f"{ok_triplets}/{len(triplets)}")
    row("blurred frames with 'out of focus' or 'motion blur'", f"{len(flagged)}/{len(blurred)}")
    kinds_right = sum(
        ("motion" in results[f][0]) == ("motion blur" in results[f][1].reasons) for f in flagged
    )
    row("  ... of which the kind (motion vs focus) is right", f"{kinds_right}/{len(flagged)}")
    for f, (label, analysis, _) in results.items():
        if "sharp_subject" in label:
            row(
                f"{f} sharp subject, soft background: not blurred",
                f"{'yes' if not set(analysis.reasons) & BLUR_REASONS else 'NO'} {said(analysis)}",
            )
    expected = {
        "well_exposed": set(),
        "over_exposed": {"overexposed"},
        "under_exposed": {"underexposed"},
    }
    for f, (label, analysis, _) in results.items():
        if label in expected:
            got = set(analysis.reasons) & {"overexposed", "underexposed"}
            row(
                f"{f} {label}: exposure reason {sorted(expected[label]) or 'none'}",
                f"{'yes' if got == expected[label] else 'NO'} {said(analysis)}",
            )
    # Baseline on sharp vs blurred (triplets + whole-image motion).
    focus_items = [
        (f, v)
        for f, v in results.items()
        if v[0] in ("sharp", "defocused_blurred", "motion_blurred", "motion_blurred(whole_image)")
        or "sharp_subject" in v[0]
    ]
    truth = np.array(["blurred" not in v[0] or "background" in v[0] for _, v in focus_items])
    ours = np.array([not (set(v[1].reasons) & BLUR_REASONS) for _, v in focus_items])
    lap = np.array([v[2] for _, v in focus_items])
    row(
        "sharp-vs-blurred accuracy, postselectd (default threshold)",
        f"{(ours == truth).mean():.3f}  (n={len(truth)})",
    )
    row(
        "sharp-vs-blurred AUC, postselectd keeper probability",
        f"{auc(np.array([v[1].keeper_probability for _, v in focus_items]), truth):.3f}",
    )
    row(
        "baseline: global Laplacian variance, best threshold",
        f"{best_threshold_accuracy(lap, truth):.3f}  AUC {auc(lap, truth):.3f}",
    )
    return {"triplets": ok_triplets, "flagged": len(flagged), "blurred": len(blurred)}


def eval_faceblur(ev: Evaluator, folder: Path) -> None:
    items = labels(folder)
    truth, ours, lap, p, closed = [], [], [], [], []
    for item in items:
        preview, analysis = ev.analyze(folder / item["file"])
        sharp = item["label"] == "face_sharp"
        truth.append(sharp)
        ours.append(not (set(analysis.reasons) & BLUR_REASONS))
        lap.append(global_laplacian(preview.image))
        p.append(analysis.keeper_probability)
        closed.append("eyes closed" in analysis.reasons)
    truth, ours, lap, p, closed = map(np.array, (truth, ours, lap, p, closed))
    print(f"\nfaceblur ({len(items)} face crops: {truth.sum()} sharp, {(~truth).sum()} blurred)")
    row("accuracy at the default threshold (blur reason or not)", f"{(ours == truth).mean():.3f}")
    row("sharp faces called blurred (false positive rate)", f"{(~ours[truth]).mean():.3f}")
    row("blurred faces caught (recall)", f"{(~ours[~truth]).mean():.3f}")
    row("AUC of the keeper probability", f"{auc(p, truth):.3f}")
    row("sharp faces with 'eyes closed'", f"{closed[truth].mean():.3f}")
    row(
        "baseline: global Laplacian variance, best threshold",
        f"{best_threshold_accuracy(lap, truth):.3f}  AUC {auc(lap, truth):.3f}",
    )


def eval_eyes(ev: Evaluator, folder: Path) -> None:
    items = labels(folder)
    closed = [("eyes closed" in ev.analyze(folder / i["file"])[1].reasons) for i in items]
    print(f"\neyes-face ({len(items)} faces, all with closed eyes)")
    row("with 'eyes closed'", f"{np.mean(closed):.3f}")


def eval_nef(ev: Evaluator, folder: Path) -> None:
    print("\nsamples/nef")
    for path in sorted(folder.glob("*.NEF")):
        _, analysis = ev.analyze(path)
        probs = " ".join(f"{k[:5]}={v:.2f}" for k, v in analysis.class_probabilities)
        row(path.name, f"p={analysis.keeper_probability:.2f} {list(analysis.reasons)}  {probs}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("eval_dir", type=Path)
    parser.add_argument("--nef", type=Path, help="also list ../shared/samples/nef")
    parser.add_argument("--sets", default="blur,faceblur,eyes-face", help="comma-separated")
    args = parser.parse_args()
    ev = Evaluator()
    sets = args.sets.split(",")
    if "blur" in sets:
        eval_blur(ev, args.eval_dir / "blur")
    if "faceblur" in sets:
        eval_faceblur(ev, args.eval_dir / "faceblur")
    if "eyes-face" in sets:
        eval_eyes(ev, args.eval_dir / "eyes-face")
    if args.nef:
        eval_nef(ev, args.nef)
    print(
        f"\nanalysis time per photo (after decode): median {np.median(ev.times):.0f} ms"
        f" over {len(ev.times)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
