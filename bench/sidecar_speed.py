"""How long one sidecar write takes (read, merge, temp file, fsync, swap), per kind of sidecar.

    python bench/sidecar_speed.py            # 200 writes per sidecar
    python bench/sidecar_speed.py --writes 50

Each round rewrites the sidecar with another verdict (select / reject / undecided), in
the lightroom + photomechanic dialects for DSC_0001.xmp and darktable + digikam for
DSC_0001.NEF.xmp, starting from the sidecars in tests/data (Lightroom, darktable with a
10-entry history, digiKam, Capture One, ON1, exiftool) and from none (a new sidecar).
Prints the median and 90th percentile in ms. fsync dominates on a real disk: run it where
the photos live (--folder) to see what a card or a share costs; --cpu counts this
process's CPU time only, which other load on the machine disturbs less.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from postselectd.sidecar import SidecarContent, write_sidecars  # noqa: E402

DATA = ROOT / "tests" / "data"
SAMPLES = {
    "new sidecar": None,
    "lightroom": DATA / "lightroom_sidecar.xmp",
    "darktable": DATA / "darktable_sidecar.xmp",
    "digikam": DATA / "xmp" / "digikam.xmp",
    "capture one": DATA / "xmp" / "capture_one.xmp",
    "on1": DATA / "xmp" / "on1.xmp",
    "exiftool": DATA / "xmp" / "exiftool_12.57.xmp",
}
REJECT = SidecarContent(
    stars=1,
    label="Red",
    keywords=("reject", "motion blur"),
    keyword_parent="PostSelect",
    keeper_probability=0.08,
    reasons=("motion blur",),
    model_version="bench",
    details=(("SubjectSharpness", "12.5"), ("BurstId", "0001"), ("BurstSize", "3")),
    verdict="reject",
)
VERDICTS = (
    REJECT,
    replace(REJECT, stars=4, label="Green", keywords=("select",), reasons=(), verdict="select"),
    replace(REJECT, stars=3, label=None, keywords=(), reasons=(), verdict=""),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=200)
    parser.add_argument("--folder", type=Path, default=None, help="where to write (a temp dir)")
    parser.add_argument(
        "--cpu", action="store_true", help="CPU time of this process (steadier on a busy machine)"
    )
    args = parser.parse_args()
    clock = time.process_time if args.cpu else time.perf_counter
    print(f"{'sidecar':<14}{'dialects':<26}{'median ms':>10}{'p90 ms':>9}")
    for name, sample in SAMPLES.items():
        for profiles in (["lightroom", "photomechanic"], ["darktable", "digikam"]):
            with tempfile.TemporaryDirectory(dir=args.folder) as tmp:
                photo = Path(tmp) / "DSC_0001.NEF"
                photo.write_bytes(b"raw")
                times = []
                for i in range(args.writes):
                    for sidecar in Path(tmp).glob("*.xmp"):
                        sidecar.unlink()
                    if sample is not None:
                        target = "DSC_0001.xmp" if "lightroom" in profiles else "DSC_0001.NEF.xmp"
                        shutil.copy(sample, Path(tmp) / target)
                    start = clock()
                    write_sidecars(photo, VERDICTS[i % 3], profiles)
                    times.append((clock() - start) * 1000)
                times.sort()
                p90 = times[int(len(times) * 0.9)]
                print(
                    f"{name:<14}{' + '.join(profiles):<26}"
                    f"{statistics.median(times):>10.2f}{p90:>9.2f}"
                )


if __name__ == "__main__":
    main()
