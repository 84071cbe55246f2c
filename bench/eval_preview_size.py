#!/usr/bin/env python3
"""From which preview size are focus and eyes judged? (rating.SMALLEST_JUDGED_PREVIEW)

    python bench/eval_preview_size.py ../shared/eval ../shared/samples/nef

Takes each labelled photo of eval/blur and each sample NEF's own preview, shrinks it to
a long side of 160 (a raw's IFD0 thumbnail) ... 1024 px, and rates every copy with the
real analysis and policy. Per size it prints how many blurred frames are neither
rejected nor sent to a check (a blur the analysis cannot see: the frame would be rated
as if sharp), how many sharp ones are rejected, and how many verdicts differ from the
full-size preview's.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from postselectd.analysis import Analyzer  # noqa: E402
from postselectd.config import Config  # noqa: E402
from postselectd.preview import load_preview  # noqa: E402
from postselectd.rating import rate  # noqa: E402

SIZES = (160, 240, 320, 480, 640, 800, 1024)
BLURRED = {"defocused_blurred", "motion_blurred", "motion_blurred(whole_image)"}
# samples/nef/README.md: which frames are blurred, which sharp.
NEF_BLURRED = {"DSC_0101", "DSC_0103", "DSC_0105", "DSC_0106"}
NEF_SHARP = {"DSC_0102", "DSC_0104", "DSC_0113"}


def photos(eval_dir: Path, nef_dir: Path) -> list[tuple[str, str, Image.Image]]:
    out = []
    with (eval_dir / "blur" / "labels.tsv").open() as f:
        for row in csv.DictReader(f, delimiter="\t"):
            label = row["label"]
            kind = "blurred" if label in BLURRED else "sharp" if label == "sharp" else "other"
            picture = load_preview(eval_dir / "blur" / row["file"]).picture
            out.append((row["file"], kind, picture))
    for nef in sorted(nef_dir.glob("*.NEF")):
        kind = (
            "blurred" if nef.stem in NEF_BLURRED else "sharp" if nef.stem in NEF_SHARP else "other"
        )
        out.append((nef.name, kind, load_preview(nef).picture))
    return out


def verdict(analyzer: Analyzer, config: Config, picture: Image.Image) -> str:
    a = analyzer.analyze(picture)
    r = rate(a.keeper_probability, a.findings or a.reasons, config.rating)
    if r.reasons:
        return "reject:" + ",".join(r.reasons)
    if r.checks:
        return "check:" + ",".join(r.checks)
    return f"{r.stars}*"


def main() -> None:
    eval_dir, nef_dir = Path(sys.argv[1]), Path(sys.argv[2])
    config = Config()
    analyzer = Analyzer(config.analysis)
    rows = []
    for name, kind, picture in photos(eval_dir, nef_dir):
        full = verdict(analyzer, config, picture)
        by_size = {}
        for size in SIZES:
            scale = size / max(picture.size)
            if scale >= 1:
                by_size[size] = full
                continue
            small = picture.resize(
                (max(1, round(picture.width * scale)), max(1, round(picture.height * scale))),
                Image.Resampling.LANCZOS,
            )
            by_size[size] = verdict(analyzer, config, small)
        rows.append((name, kind, full, by_size))
        print(f"{name:<16}{kind:<8}full {full:<24}" + " ".join(f"{by_size[s]:<22}" for s in SIZES))
    blurred = [r for r in rows if r[1] == "blurred"]
    sharp = [r for r in rows if r[1] == "sharp"]
    print(f"\n{'long side':<10}{'blur unseen':>14}{'sharp rejected':>16}{'differs from full':>19}")
    for size in SIZES:
        unseen = sum(1 for r in blurred if r[3][size].endswith("*"))
        rejected = sum(1 for r in sharp if r[3][size].startswith("reject"))
        differs = sum(1 for r in rows if r[3][size] != r[2])
        print(
            f"{size:<10}{unseen:>8} of {len(blurred):<3}{rejected:>10} of {len(sharp):<3}"
            f"{differs:>13} of {len(rows)}"
        )


if __name__ == "__main__":
    main()
