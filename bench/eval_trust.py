#!/usr/bin/env python3
"""Trust benchmark: how often does postselectd reject a photograph any editor would keep?

    python bench/trust/fetch_trust.py ../data/trust  # once: the known-good set
    python bench/eval_trust.py                       # data: ../data/trust
    python bench/eval_trust.py --no-nef --list-false-rejects
    python bench/eval_trust.py --strictness gentle --json > trust.json

Runs ``Pipeline.score`` (exactly what ``postselectd score`` runs: worker processes, burst
grouping, the rating policy; ``dry_run`` so no sidecar is written) over the known-good set
listed in ``<data>/labels.tsv`` (>= 300 real photographs, >= 120 with people, each >= 1000 px
on the long side), twice:

- on the photos directly (JPEG/PNG/TIFF at their own resolution), and
- through NEFs made with ../shared/tools/make_nef.py, whose 1620x1080 preview is what the
  daemon decodes for a real camera file (cached in ``<data>/.nef-cache``; the first run makes
  them, ~1.5 s each).

A photo counts as falsely REJECTED when it gets 1 star (or -1), the reject colour label, or
any reason without a ``check`` keyword; as a CHECK when a keyword is ``check`` or starts with
``check`` (a doubtful reason: 2 stars, label unchanged) and it is not rejected, or when it is
not judged at all (0 stars, ``check|preview too small``: a preview under
``rating.SMALLEST_JUDGED_PREVIEW``, which none of these >= 1000 px photos has). The table
gives n, rejects and checks per category, for photos with and without people, and overall,
with the reasons that fired.

On the same run, the catching side, which must not get worse. Its photos are small crops of
labelled test photos (148 of the 149 eyes-face faces and blur-0012 to 0014 are under 640 px)
standing in for camera-size frames, so they are analysed exactly as ``postselectd score``
does (``Pipeline.analyze``) and rated by the policy without the preview-size gate that would
give them no verdict:
- ../shared/eval/eyes-face: faces with closed eyes rejected with an eyes reason (and flagged
  at all: rejected or checked);
- ../shared/eval/eyes-crop: open/closed single-eye crops judged by the face chain's eye
  reader (accuracy): ``FaceAnalyzer.eye_crop_closed_probability`` >= 0.5 (each patch framed
  on the eye corners the iris model finds in it), or in a version without the eye-state
  model ``eye_crop_openness`` against ``EYES_CLOSED_BELOW``;
- ../shared/eval/blur: really blurred frames rejected with a blur reason; no sharp frame
  rejected;
- ../shared/samples/nef: the bursts still pick DSC_0102 and DSC_0104 as best of burst.

``--strictness`` sets the config key ``rating.strictness`` when this version has it (ignored,
with a note, otherwise). Runs in a few minutes on 2 cores once the NEFs are cached.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))

from postselectd.config import Config, RatingPolicy, parse_config  # noqa: E402
from postselectd.pipeline import Pipeline, Scored, default_workers  # noqa: E402
from postselectd.rating import rate as rating_of  # noqa: E402
from postselectd.stages import FileResult  # noqa: E402

CATEGORIES = [
    "portrait close-up",
    "environmental portrait",
    "couple",
    "group 5+",
    "children",
    "event/stage",
    "macro/bokeh",
    "landscape",
    "sky, small subject",
    "water",
    "night/low light",
    "high key",
    "low key",
    "fog",
    "foliage/texture",
    "architecture",
    "animal",
    "bird",
    "sport/action",
]
LOW_P = "(keeper p below 2 stars)"
NEF_PREVIEW = 1620  # the long side of the preview the daemon decodes in a camera NEF
SMALL = f"long side < {NEF_PREVIEW} px"  # upscaled into the NEF's preview: softer there
LARGE = f"long side >= {NEF_PREVIEW} px"
BLUR_WORDS = ("blur", "focus")


def default_data_dir() -> Path:
    for candidate in (ROOT.parent / "data" / "trust", SHARED.resolve().parent / "data" / "trust"):
        if (candidate / "labels.tsv").exists():
            return candidate
    return ROOT.parent / "data" / "trust"


# --- verdicts ---------------------------------------------------------------------------


def reason_text(reason: object) -> str:
    """A reason as text, whether the pipeline gives a plain string or a richer value."""
    if isinstance(reason, str):
        return reason
    for attribute in ("reason", "name", "text"):
        value = getattr(reason, attribute, None)
        if isinstance(value, str):
            return value
    if isinstance(reason, tuple) and reason and isinstance(reason[0], str):
        return reason[0]
    return str(reason)


def is_check(keyword: str) -> bool:
    return keyword == "check" or keyword.startswith("check")


@dataclass
class Verdict:
    file: str
    kind: str  # "keep", "check", "reject" or "error"
    why: tuple[str, ...] = ()
    p: float | None = None
    stars: int | None = None


def verdict_of(name: str, result: FileResult | None, policy: RatingPolicy) -> Verdict:
    if result is None or result.error and result.rating is None:
        return Verdict(name, "error", (result.error if result else "no result",))
    rating = result.rating
    reasons = tuple(reason_text(r) for r in result.reasons)
    checks = tuple(k for k in rating.keywords if is_check(k))
    if rating.stars == 0 or getattr(result, "preview_too_small", False):
        # Not judged (preview under rating.SMALLEST_JUDGED_PREVIEW): no verdict at all, the
        # photographer is asked to look. 0 stars is "not rated", not a reject.
        return Verdict(name, "check", checks or ("not judged",), result.keeper_probability, 0)
    reject_label = policy.labels.reject
    rejected = (
        rating.stars <= 1
        or rating.verdict == "reject"
        or (reject_label is not None and rating.label == reject_label)
        or (bool(reasons) and not checks)
    )
    if rejected:
        return Verdict(name, "reject", reasons or (LOW_P,), result.keeper_probability, rating.stars)
    if checks:
        return Verdict(name, "check", checks, result.keeper_probability, rating.stars)
    return Verdict(name, "keep", (), result.keeper_probability, rating.stars)


# --- running the real pipeline ------------------------------------------------------------


def score(paths: list[Path], config: Config, workers: int) -> dict[Path, FileResult]:
    """``postselectd score`` on these files, without writing sidecars."""
    if not paths:
        return {}
    with Pipeline(config, workers=min(workers, len(paths)), dry_run=True) as pipeline:
        return {r.path: r for r in pipeline.score(paths)}


def judge_as_camera_frames(
    paths: list[Path], config: Config, workers: int
) -> dict[Path, FileResult]:
    """The catching side's verdicts on small labelled crops that stand in for camera frames.

    ``postselectd score`` gives a preview under rating.SMALLEST_JUDGED_PREVIEW no verdict,
    which would measure nothing here. So: the same analysis (``Pipeline.analyze``: worker
    processes, preview, models) and the same policy (``rating.rate``), only without the
    preview size. No burst grouping: a burst only adds a star, which changes no verdict.
    """
    if not paths:
        return {}
    with Pipeline(config, workers=min(workers, len(paths)), dry_run=True) as pipeline:
        analysed = pipeline.analyze(paths)
    return {s.path: judged_anyway(s, config.rating) for s in analysed}


def judged_anyway(scored: Scored, policy: RatingPolicy) -> FileResult:
    """What ``stages.finish`` would rate this analysis at a camera's preview size."""
    a = scored.analysis
    if a is None:
        return FileResult(path=scored.path, error=scored.error)
    rating = rating_of(a.keeper_probability, a.findings or a.reasons, policy)
    return FileResult(
        path=scored.path,
        rating=rating,
        keeper_probability=a.keeper_probability,
        reasons=rating.reasons,
        checks=rating.checks,
        findings=a.findings,
        faces=len(a.faces),
        preview_source=scored.preview_source,
    )


def make_nefs(photos: list[Path], cache: Path, jobs: int) -> tuple[dict[Path, Path], dict]:
    """One NEF per photo (make_nef.py, previews only), an hour apart so none is a burst.

    Returns the NEF of each photo and, for the photos make_nef.py cannot turn into a NEF
    (a film scan whose grain does not fit the camera's 6000x4000 preview slot), its message.
    """
    tool = SHARED / "tools" / "make_nef.py"
    cache.mkdir(parents=True, exist_ok=True)
    start = datetime(2026, 6, 1, 8, 0, 0)
    plan = {photo: cache / f"{photo.stem}.NEF" for photo in photos}
    failed: dict[Path, str] = {}

    def fresh(path: Path, photo: Path) -> bool:
        return path.exists() and path.stat().st_mtime >= photo.stat().st_mtime

    for photo in photos:
        marker = plan[photo].with_suffix(".failed")
        if fresh(marker, photo):
            failed[photo] = marker.read_text().strip()
    todo = [
        (i, photo)
        for i, photo in enumerate(photos)
        if photo not in failed and not fresh(plan[photo], photo)
    ]

    def one(item: tuple[int, Path]) -> None:
        i, photo = item
        when = (start + timedelta(hours=i)).strftime("%Y:%m:%d %H:%M:%S")
        part = plan[photo].with_suffix(".part")
        run = subprocess.run(
            [sys.executable, str(tool), str(photo), str(part), "--time", when],
            capture_output=True,
            text=True,
        )
        if run.returncode == 0:
            os.replace(part, plan[photo])
        else:
            part.unlink(missing_ok=True)
            failed[photo] = (run.stderr.strip().splitlines() or ["make_nef.py failed"])[-1]
            plan[photo].with_suffix(".failed").write_text(failed[photo] + "\n")

    if todo:
        started = time.monotonic()
        print(f"making {len(todo)} NEFs in {cache} (cached for the next run) ...", file=sys.stderr)
        with ThreadPoolExecutor(jobs) as pool:
            for done, _ in enumerate(pool.map(one, todo), 1):
                if done % 50 == 0:
                    print(
                        f"  {done}/{len(todo)} ({time.monotonic() - started:.0f} s)",
                        file=sys.stderr,
                    )
    made = {photo: nef for photo, nef in plan.items() if photo not in failed and nef.exists()}
    return made, failed


# --- the known-good table -----------------------------------------------------------------


@dataclass
class Tally:
    n: int = 0
    rejects: int = 0
    checks: int = 0
    errors: int = 0
    reasons: Counter = field(default_factory=Counter)
    check_reasons: Counter = field(default_factory=Counter)

    def add(self, v: Verdict) -> None:
        self.n += 1
        if v.kind == "reject":
            self.rejects += 1
            self.reasons.update(v.why)
        elif v.kind == "check":
            self.checks += 1
            self.check_reasons.update(v.why)
        elif v.kind == "error":
            self.errors += 1

    def as_json(self) -> dict:
        return {
            "n": self.n,
            "rejects": self.rejects,
            "false_reject_rate": rate(self.rejects, self.n),
            "checks": self.checks,
            "check_rate": rate(self.checks, self.n),
            "errors": self.errors,
            "reasons": dict(self.reasons.most_common()),
            "check_reasons": dict(self.check_reasons.most_common()),
        }


def rate(k: int, n: int) -> float | None:
    return round(k / n, 4) if n else None


def tally(items: list[dict], verdicts: dict[str, Verdict]) -> dict[str, Tally]:
    rows: dict[str, Tally] = defaultdict(Tally)
    for item in items:
        v = verdicts.get(item["file"])
        if v is None:
            continue  # no NEF could be made of it
        rows[item["category"]].add(v)
        rows["people" if item["people"] == "yes" else "no people"].add(v)
        rows[SMALL if item.get("long_side", NEF_PREVIEW) < NEF_PREVIEW else LARGE].add(v)
        rows["overall"].add(v)
    return rows


def long_side(path: Path) -> int:
    from PIL import Image

    with Image.open(path) as im:
        return max(im.size)


def pct(k: int, n: int) -> str:
    return f"{100 * k / n:5.1f}%" if n else "    -"


def short(counter: Counter, limit: int = 3) -> str:
    return ", ".join(f"{r} {c}" for r, c in counter.most_common(limit))


def print_table(modes: dict[str, dict[str, Tally]], order: list[str]) -> None:
    names = list(modes)
    head = f"{'':24s}{'n':>5s}"
    for name in names:
        head += f" | {name + ' reject':>11s}  {'check':>10s}"
    print(head + " | reasons (" + names[-1] + ")")
    for key in order:
        first = modes[names[0]].get(key)
        if first is None or not first.n:
            continue
        line = f"{key:24s}{first.n:5d}"
        for name in names:
            t = modes[name][key]
            line += (
                f" | {t.rejects:4d} {pct(t.rejects, t.n):>6s}  {t.checks:4d} {pct(t.checks, t.n)}"
            )
        print(line + " | " + short(modes[names[-1]][key].reasons))
        if key == order[len(CATEGORIES) - 1]:
            print("-" * len(head))


# --- the catching side --------------------------------------------------------------------


def eval_labels(folder: Path) -> list[dict]:
    with open(folder / "labels.tsv", newline="") as fh:
        return [r for r in csv.DictReader(fh, delimiter="\t") if not r["file"].endswith(".xml")]


def flagged_for(v: Verdict, words: tuple[str, ...]) -> bool:
    return any(any(w in r for w in words) for r in v.why)


def catch_side(config: Config, workers: int, shared: Path) -> dict:
    policy = config.rating
    out: dict = {}
    eyes = shared / "eval" / "eyes-face"
    if (eyes / "labels.tsv").exists():
        items = [r for r in eval_labels(eyes) if r["label"] == "eyes_closed"]
        results = judge_as_camera_frames([eyes / r["file"] for r in items], config, workers)
        vs = [verdict_of(r["file"], results.get(eyes / r["file"]), policy) for r in items]
        caught = sum(v.kind == "reject" and flagged_for(v, ("eye",)) for v in vs)
        flagged = sum(v.kind in ("reject", "check") and flagged_for(v, ("eye",)) for v in vs)
        out["eyes_face"] = {"n": len(vs), "caught": caught, "flagged": flagged}
    crops = shared / "eval" / "eyes-crop"
    if (crops / "labels.tsv").exists():
        out["eyes_crop"] = eyes_crop(crops)
    blur = shared / "eval" / "blur"
    if (blur / "labels.tsv").exists():
        items = eval_labels(blur)
        results = judge_as_camera_frames([blur / r["file"] for r in items], config, workers)
        blurred, sharp = [], []
        for r in items:
            v = verdict_of(r["file"], results.get(blur / r["file"]), policy)
            label = r["label"]
            if "blurred" in label and "background" not in label:
                blurred.append(v)
            elif label.startswith("sharp") or label == "well_exposed":
                sharp.append(v)
        out["blur"] = {
            "blurred": len(blurred),
            "caught": sum(v.kind == "reject" and flagged_for(v, BLUR_WORDS) for v in blurred),
            "flagged": sum(v.kind != "keep" and flagged_for(v, BLUR_WORDS) for v in blurred),
            "sharp": len(sharp),
            "sharp_rejected": [
                f"{v.file}: {', '.join(v.why)}" for v in sharp if v.kind == "reject"
            ],
            "sharp_checked": [f"{v.file}: {', '.join(v.why)}" for v in sharp if v.kind == "check"],
        }
    nefs = shared / "samples" / "nef"
    if nefs.is_dir():
        with tempfile.TemporaryDirectory(prefix="trust-bursts-") as tmp:
            copies = []
            for path in sorted(nefs.glob("*.NEF")):
                shutil.copy2(path, Path(tmp) / path.name)
                copies.append(Path(tmp) / path.name)
            results = score(copies, config, workers)
            best = sorted(p.stem for p, r in results.items() if r.best_of_burst)
        out["bursts"] = {
            "best_of_burst": best,
            "ok": {"DSC_0102", "DSC_0104"} <= set(best)
            and not {"DSC_0101", "DSC_0103", "DSC_0105", "DSC_0106"} & set(best),
        }
    return out


def eyes_crop(folder: Path) -> dict:
    """Open/closed single-eye crops through the face chain's eye reader: the eye-state model
    at P(closed) >= 0.5 where the models have it (as bench/eval_eyes.py), else the iris
    model's lid gap (as bench/eval_faces.py)."""
    import numpy as np
    from PIL import Image

    from postselectd.analysis import faces as F
    from postselectd.analysis.runtime import models_dir

    analyzer = F.FaceAnalyzer(models_dir(), threads=1)
    if getattr(analyzer, "eye_state", None) is not None:
        reader = "eye-state model, P >= 0.5"

        def is_closed(eye: np.ndarray) -> bool:
            return analyzer.eye_crop_closed_probability(eye) >= 0.5

    else:
        read = getattr(analyzer, "eye_crop_openness", None)
        below = getattr(F, "EYES_CLOSED_BELOW", None)
        if read is None or below is None:
            return {"skipped": "this version has no eye-crop reader"}
        reader = "iris lid gap"

        def is_closed(eye: np.ndarray) -> bool:
            return read(eye) < below

    right = closed_n = closed_hit = open_n = open_false = 0
    for r in eval_labels(folder):
        with Image.open(folder / r["file"]) as im:
            called_closed = is_closed(np.asarray(im.convert("RGB")))
        closed = r["label"] == "eyes_closed"
        right += called_closed == closed
        if closed:
            closed_n += 1
            closed_hit += called_closed
        else:
            open_n += 1
            open_false += called_closed
    n = closed_n + open_n
    return {
        "n": n,
        "reader": reader,
        "accuracy": rate(right, n),
        "closed_caught": f"{closed_hit}/{closed_n}",
        "open_called_closed": f"{open_false}/{open_n}",
    }


def print_catch(c: dict) -> None:
    print("\ncatching side (must stay good)")
    if "eyes_face" in c:
        e = c["eyes_face"]
        print(
            f"  eyes-face   closed eyes rejected with an eyes reason  {e['caught']}/{e['n']} = "
            f"{pct(e['caught'], e['n']).strip()}   (rejected or checked: {e['flagged']})"
            "   target >= 95%"
        )
    if "eyes_crop" in c:
        e = c["eyes_crop"]
        if "skipped" in e:
            print(f"  eyes-crop   skipped: {e['skipped']}")
        else:
            print(
                f"  eyes-crop   open/closed accuracy {e['accuracy']:.3f} (n={e['n']}, "
                f"{e.get('reader', 'iris lid gap')}; "
                f"closed caught {e['closed_caught']}, "
                f"open called closed {e['open_called_closed']})"
                "   target >= 0.97"
            )
    if "blur" in c:
        b = c["blur"]
        print(
            f"  blur        blurred frames rejected for blur  {b['caught']}/{b['blurred']} = "
            f"{pct(b['caught'], b['blurred']).strip()}   (rejected or checked: {b['flagged']})"
            "   target >= 90%"
        )
        print(
            f"  blur        sharp frames rejected  {len(b['sharp_rejected'])}/{b['sharp']}"
            + (f"  ({'; '.join(b['sharp_rejected'])})" if b["sharp_rejected"] else "")
            + (f"  checked: {'; '.join(b['sharp_checked'])}" if b["sharp_checked"] else "")
            + "   target 0"
        )
    if "bursts" in c:
        b = c["bursts"]
        print(
            f"  bursts      best of burst: {', '.join(b['best_of_burst']) or 'none'}  "
            f"-> {'yes' if b['ok'] else 'NO'} (0102 and 0104 wanted)"
        )


# --- main -----------------------------------------------------------------------------------


def build_config(strictness: str | None) -> tuple[Config, str]:
    if strictness is None:
        return Config(), ""
    if "strictness" not in RatingPolicy.model_fields:
        return Config(), f"no rating.strictness in this version: --strictness {strictness} ignored"
    return parse_config({"rating": {"strictness": strictness}}, "--strictness"), ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="known-good set (labels.tsv)")
    parser.add_argument(
        "--nef",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also score NEFs made from the photos (default: yes)",
    )
    parser.add_argument(
        "--nef-cache",
        type=Path,
        default=None,
        help="where the NEFs are kept (default: <data>/.nef-cache)",
    )
    parser.add_argument("--strictness", help="rating.strictness (off/gentle/normal/strict)")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--shared", type=Path, default=SHARED)
    parser.add_argument("--no-catch", action="store_true", help="skip the catching side")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead")
    parser.add_argument(
        "--list-false-rejects",
        action="store_true",
        help="list every falsely rejected (and checked) photo with its reasons",
    )
    args = parser.parse_args()

    data = args.data or default_data_dir()
    if not (data / "labels.tsv").exists():
        print(
            f"{data}/labels.tsv not found: make it with bench/trust/fetch_trust.py", file=sys.stderr
        )
        return 2
    with open(data / "labels.tsv", newline="") as fh:
        items = list(csv.DictReader(fh, delimiter="\t"))
    config, note = build_config(args.strictness)
    workers = args.workers or default_workers()
    policy = config.rating
    started = time.monotonic()

    photos = [data / item["file"] for item in items]
    for item, photo in zip(items, photos, strict=True):
        item["long_side"] = long_side(photo)
    modes: dict[str, dict[str, Verdict]] = {}
    no_nef: dict[Path, str] = {}
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    results = score(photos, config, workers)
    timings["photo"] = time.monotonic() - t0
    modes["photo"] = {
        i["file"]: verdict_of(i["file"], results.get(p), policy)
        for i, p in zip(items, photos, strict=True)
    }
    if args.nef:
        plan, no_nef = make_nefs(photos, args.nef_cache or data / ".nef-cache", workers)
        t0 = time.monotonic()
        results = score(list(plan.values()), config, workers)
        timings["NEF"] = time.monotonic() - t0
        modes["NEF"] = {
            i["file"]: verdict_of(i["file"], results.get(plan[p]), policy)
            for i, p in zip(items, photos, strict=True)
            if p in plan
        }
    tallies = {name: tally(items, verdicts) for name, verdicts in modes.items()}
    catch = {} if args.no_catch else catch_side(config, workers, args.shared)
    order = CATEGORIES + ["people", "no people", SMALL, LARGE, "overall"]
    order += sorted({i["category"] for i in items} - set(order))

    false_rejects: dict[str, dict[str, list[dict]]] = {}
    by_file = {i["file"]: i for i in items}
    for name, verdicts in modes.items():
        listed: dict[str, list[dict]] = defaultdict(list)
        for v in verdicts.values():
            if v.kind in ("reject", "check", "error"):
                listed[by_file[v.file]["category"]].append(
                    {
                        "file": v.file,
                        "kind": v.kind,
                        "why": list(v.why),
                        "p": v.p,
                        "stars": v.stars,
                        "faces": by_file[v.file].get("faces", ""),
                    }
                )
        false_rejects[name] = dict(listed)

    if args.json:
        print(
            json.dumps(
                {
                    "data": str(data),
                    "strictness": args.strictness,
                    "note": note,
                    "known_good": {
                        name: {k: t.as_json() for k, t in rows.items()}
                        for name, rows in tallies.items()
                    },
                    "false_rejects": false_rejects,
                    "catch": catch,
                    "no_nef": {p.name: why for p, why in no_nef.items()},
                    "seconds": {k: round(v, 1) for k, v in timings.items()},
                },
                indent=1,
            )
        )
        return 0

    people = sum(i["people"] == "yes" for i in items)
    print(
        f"trust benchmark: {len(items)} known-good photos in {data} ({people} with people)"
        f"; strictness {args.strictness or 'default'}"
    )
    if note:
        print(f"note: {note}")
    print(
        "false reject = 1 star, the reject label, or a reason without a 'check' keyword;"
        " check = a 'check' keyword (2 stars)\n"
    )
    print_table(tallies, order)
    if no_nef:
        print(
            f"no NEF made of {len(no_nef)} photo(s), left out of the NEF columns: "
            + "; ".join(f"{p.name} ({why})" for p, why in no_nef.items())
        )
    for name, rows in tallies.items():
        overall = rows["overall"]
        print(
            f"\nreasons that fired ({name}): rejects: {short(overall.reasons, 12) or 'none'}"
            f"; checks: {short(overall.check_reasons, 12) or 'none'}"
        )
    if args.list_false_rejects:
        for name, listed in false_rejects.items():
            print(f"\nfalse rejects and checks ({name})")
            for category in order:
                for entry in listed.get(category, []):
                    p = f"p={entry['p']:.2f}" if entry["p"] is not None else ""
                    print(
                        f"  {category:22s} {entry['kind']:6s} {entry['file']:55s} "
                        f"{', '.join(entry['why'])}  {p} faces={entry['faces']}"
                    )
    if catch:
        print_catch(catch)
    print(
        f"\n{time.monotonic() - started:.0f} s in all; scoring "
        + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
        + f" ({workers} workers)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
