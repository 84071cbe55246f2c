"""The learning loop: the daemon keeps the personal model up to date from corrections.

    sidecar written -> correction? (the person's verdict, in the journal) -> enough of them?
    -> retrain (a background process, nice 19, idle I/O) -> held-out comparison -> swap

- **A correction** is a sidecar of a photo the daemon rated whose rating or label now
  differs from what postselectd recorded writing there: the rule `train` learns by
  (ratings_sources.marks_from_xmp, the ``CORRECTION`` source), read from the sidecars only,
  never from the photo. The daemon looks when a sidecar is written (a watch event) and on
  its folder scans; the journal keeps each correction with its verdict.
- **When**: ``learn.after_corrections`` corrections since the last try, or a finished shoot
  (``learn.min_corrections`` of them and ``learn.after_quiet_minutes`` without a new photo
  or correction), or ``postselectd learn --now``.
- **The retrain** reads no photo: the frames the model in use learnt from are kept beside it
  (``<model>.frames.npz``, train.save_frames) and the corrected photos' features are the
  analyses the journal keeps (Analysis.taste and the embedding). A correction replaces what
  the frames said of the same photo. Then the same procedure as `train` (train.fit).
- **The comparison**: about 30% of the shoots the model in use never saw (the corrections'
  shoots) are held out; the candidate is trained on everything else and both models rate
  the held-out frames. The candidate is used only if it keeps at least as large a share of
  the held-out selects as the model in use, and its precision is not more than
  ``PRECISION_SLACK`` below (a model that keeps everything keeps every select too). Then it
  is trained on every shoot and written as the newest personal model, which the daemon's
  workers load for the next photos; the previous model stays on disk. A refused candidate
  is logged with both sets of numbers, and nothing changes.
- **Rollback**: the newest model (its card and frames) moves to ``personal/retired/``, so
  the one before is the newest again.

Plain functions and files: the daemon runs ``background_retrain`` in its own process.
"""

from __future__ import annotations

import ctypes
import json
import logging
import math
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from postselectd.config import Config
from postselectd.ratings_sources import CORRECTION, Verdict, from_xmp, sidecars_of
from postselectd.state import Journal, Row
from postselectd.versions import analysis_version

log = logging.getLogger(__name__)

LEARN_DIR = "learn"
REQUEST_NAME = "request.json"
LAST_NAME = "last.json"
RETIRED = "retired"
HELD_OUT = 0.3
# The candidate's held-out precision may be this much below the model in use's.
PRECISION_SLACK = 0.10


class LearnError(Exception):
    """Learning cannot go on; str() says why and what to do."""


# --- where things are --------------------------------------------------------------------


def learn_dir(config: Config) -> Path:
    return config.resolved_state_dir() / LEARN_DIR


def models_folder(config: Config) -> Path:
    """The folder whose newest model the daemon rates with."""
    pinned = config.analysis.personal_model
    return pinned if pinned is not None and not pinned.is_file() else config.personal_models_dir()


def current_model(config: Config) -> Path | None:
    """The personal model the daemon rates with now, or None."""
    from postselectd.analysis.personal import newest_model
    from postselectd.analysis.runtime import ModelError

    try:
        return newest_model(config.analysis.personal_model or config.personal_models_dir())
    except ModelError:
        return None


def why_off(config: Config) -> str:
    """Why the daemon does not learn ("" when it does)."""
    if config.learn.enabled is False:
        return "off in the config (learn: enabled: false)"
    if config.model != "personal":
        return "the daemon rates with the shipped model (model: default)"
    pinned = config.analysis.personal_model
    if pinned is not None and pinned.is_file():
        return f"analysis.personal_model pins one model file ({pinned.name})"
    if current_model(config) is None:
        return "no personal model yet (`postselectd train` makes the first one)"
    return ""


def last_try(config: Config) -> dict:
    """What the last retrain did (learn/last.json), {} before the first."""
    try:
        found = json.loads((learn_dir(config) / LAST_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _write_json(path: Path, value: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, indent=2) + "\n")
    os.replace(tmp, path)


# --- requests from `postselectd learn` to a running daemon --------------------------------


def request(config: Config, action: str, *, shuffle_labels: bool = False) -> Path:
    """Ask the running daemon to ``action`` (now, rollback); it takes the file away."""
    path = learn_dir(config) / REQUEST_NAME
    _write_json(path, {"action": action, "shuffle_labels": shuffle_labels, "at": time.time()})
    return path


def take_request(config: Config) -> dict | None:
    path = learn_dir(config) / REQUEST_NAME
    try:
        found = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        found = None
    try:
        path.unlink()
    except OSError:
        pass
    if not isinstance(found, dict) or found.get("action") not in ("now", "rollback"):
        log.warning("%s: not a request postselectd understands; removed", path)
        return None
    return found


# --- noticing corrections (the daemon's main thread: sidecars only) -----------------------


def correction_of(photo: Path, config: Config) -> Verdict | None:
    """The person's verdict where a sidecar of ``photo`` no longer says what postselectd
    wrote (train's own rule), else None. Reads the sidecars, never the photo."""
    verdict = from_xmp(photo, config.train, embedded=False)
    return verdict if verdict is not None and verdict.source == CORRECTION else None


def owners(journal: Journal, sidecar: Path) -> list[Row]:
    """The rated photos a sidecar may belong to: DSC_0001.NEF for DSC_0001.NEF.xmp, any
    DSC_0001.* for DSC_0001.xmp."""
    stem = sidecar.name[: -len(".xmp")]
    found = journal.rated_named(sidecar.parent, stem)
    direct = journal.get(sidecar.parent / stem)
    if direct is not None and direct.status == "rated" and direct not in found:
        found.append(direct)
    return found


def written_since(row: Row, since: float) -> bool:
    """Whether a sidecar of the photo was written after ``since`` (cheap: a stat each)."""
    for path in sidecars_of(row.path):
        try:
            if path.stat().st_mtime > since:
                return True
        except OSError:
            continue
    return False


def look(journal: Journal, row: Row, config: Config, now: float, since: float | None = None) -> str:
    """Record or drop the correction of one rated photo; returns "new", "undone" or "".

    Its sidecars are read only if one was written after ``since`` (default: postselectd's
    last write, as the journal's row says; a sidecar event passes the first rating's time,
    since postselectd's own later write may have merged a person's change into it)."""
    if not written_since(row, row.updated_at if since is None else since):
        return ""
    verdict = correction_of(row.path, config)
    if verdict is None:
        return "undone" if journal.drop_correction(row.path) else ""
    return "new" if journal.record_correction(row.path, verdict.verdict, verdict.why, now) else ""


# --- deciding when ----------------------------------------------------------------------


def tried_at(config: Config) -> float:
    """Since when corrections count as new: the last try, else the model's making."""
    at = last_try(config).get("at")
    if isinstance(at, int | float):
        return float(at)
    model = current_model(config)
    try:
        return model.stat().st_mtime if model is not None else 0.0
    except OSError:
        return 0.0


def due(config: Config, journal: Journal, now: float, last_activity: float) -> str | None:
    """Why a retrain is due now, or None."""
    settings = config.learn
    count, latest = journal.corrections_since(tried_at(config))
    if count >= settings.after_corrections:
        return f"{count} corrections since the last model"
    quiet = settings.after_quiet_minutes * 60
    if quiet and count >= settings.min_corrections:
        if now - max(latest or 0.0, last_activity) >= quiet:
            return (
                f"{count} corrections, and nothing new for "
                f"{settings.after_quiet_minutes:g} minutes (a finished shoot)"
            )
    return None


# --- the retrain (in its own process) ----------------------------------------------------

_IOPRIO_SET = {"x86_64": 251, "i386": 289, "i686": 289, "aarch64": 30, "arm64": 30, "armv7l": 314}
_IOPRIO_CLASS_IDLE = 3
_IOPRIO_WHO_PROCESS = 1


def lower_priority() -> list[str]:
    """nice 19, and the idle I/O class on Linux (ioprio_set): the retrain only gets what
    rating leaves. Where either is not allowed it is skipped quietly. Returns what was set."""
    done = []
    try:
        os.nice(19 - os.nice(0))
        done.append("nice 19")
    except (OSError, AttributeError):
        pass
    number = _IOPRIO_SET.get(platform.machine())
    if sys.platform.startswith("linux") and number is not None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.syscall(number, _IOPRIO_WHO_PROCESS, 0, _IOPRIO_CLASS_IDLE << 13) == 0:
                done.append("idle I/O")
        except (OSError, AttributeError):
            pass
    return done


def correction_frames(journal: Journal, config: Config) -> tuple[list, int]:
    """The corrected photos as training frames, from the analyses the journal keeps (no
    photo is read); and how many have no kept analysis (analysed by an older version)."""
    from postselectd.analysis.personal import taste_features
    from postselectd.stages import RecordError, scored_from_record
    from postselectd.train import Frame

    frames, missing = [], 0
    for path, verdict, why, _ in journal.corrections():
        row = journal.get(path)
        record = (
            journal.cached_analysis(row.fingerprint, analysis_version())
            if row is not None and row.fingerprint
            else None
        )
        try:
            scored = scored_from_record(record) if record is not None else None
        except RecordError:
            scored = None
        analysis = scored.analysis if scored is not None else None
        if analysis is None or analysis.embedding is None:
            missing += 1
            continue
        taste = analysis.taste
        if taste is None:  # analysed before the taste was kept: the shipped view
            judged = dict(analysis.judged_probabilities)
            taste = taste_features(
                analysis.measurements,
                dict(analysis.class_probabilities),
                judged.get("keeper", analysis.keeper_probability),
                tuple(f for f in analysis.findings if f.reason in analysis.reasons)
                or analysis.reasons,
                analysis.faces,
                max(scored.preview_size),
                analysis.person_score,
            )
        embedding = np.asarray(analysis.embedding, np.float32)
        frames.append(
            Frame(
                path=path,
                verdict=Verdict(path, verdict, CORRECTION, why),
                taste=np.asarray(taste, np.float32),
                embedding=embedding,
                mirrored=embedding,  # the daemon does not analyse a mirrored preview
                capture_day=(
                    scored.capture_time.strftime("%Y-%m-%d") if scored.capture_time else ""
                ),
            )
        )
    return frames, missing


def comparison_split(data, new: np.ndarray, seed: int = 20261206) -> np.ndarray:
    """Held-out frames for the comparison: ~HELD_OUT of the shoots the model in use never
    saw (``new``: a mask of the frames of such shoots), with selects and rejects on both
    sides; else (too few new shoots) train's own split of every shoot."""
    from postselectd.train import split_held_out

    shoots = np.unique(data.shoot[new])
    n_test = max(1, round(len(shoots) * HELD_OUT))
    if len(shoots) >= 2:
        for attempt in range(50):
            rng = np.random.default_rng(seed + attempt)
            test = np.isin(data.shoot, rng.permutation(shoots)[:n_test])
            ys, yt = data.y[~test], data.y[test]
            if ys.sum() >= 2 and (1 - ys).sum() >= 2 and yt.sum() >= 1 and (1 - yt).sum() >= 1:
                return test
    return split_held_out(data)


def _numbers(kept: np.ndarray, y: np.ndarray, E: np.ndarray, shoots: np.ndarray) -> dict:
    from postselectd.train import recall_interval, recall_interval_in_scenes, recall_precision

    recall, precision = recall_precision(kept, y)
    kept_selects = int(kept[y == 1].sum())
    low, high, _ = recall_interval_in_scenes(kept, y, E, shoots)
    return {
        "recall": round(recall, 4),
        "recall_interval": [round(low, 4), round(high, 4)],
        "precision": round(precision, 4) if not math.isnan(precision) else 0.0,
        "precision_interval": [
            round(v, 4) if not math.isnan(v) else 0.0
            for v in recall_interval(kept_selects, int(kept.sum()))
        ],
    }


def better(candidate: dict, current: dict) -> bool:
    """Keeps at least as many held-out selects, without giving up much precision."""
    return (
        candidate["recall"] >= current["recall"]
        and candidate["precision"] >= current["precision"] - PRECISION_SLACK
    )


def retrain(config: Config, *, reason: str, shuffle_labels: bool = False) -> dict:
    """Train a candidate from the model's frames and the corrections; swap it in if it is
    at least as good on held-out shoots. Returns the outcome (also learn/last.json)."""
    from postselectd.analysis.personal import PersonalHead
    from postselectd.train import (
        TrainError,
        build_dataset,
        check_classes,
        describe,
        evaluate,
        load_frames,
        make_model,
        write_card,
    )

    started = time.time()
    cpu = time.process_time()
    outcome: dict = {"at": started, "reason": reason}
    try:
        current = current_model(config)
        if current is None:
            raise LearnError("no personal model to learn on from (run `postselectd train`)")
        outcome["previous"] = str(current)
        try:
            base = load_frames(current)
        except (OSError, ValueError, KeyError):
            base = []
            outcome["note"] = (
                f"{current.name} was trained before its frames were kept beside it: "
                "learning from the corrections alone (run `postselectd train` once to "
                "learn from both)"
            )
        with Journal(config.resolved_state_dir(), readonly=True) as journal:
            corrected, missing = correction_frames(journal, config)
        by_path = {f.path: f for f in base}
        for frame in corrected:
            by_path[frame.path] = frame  # the person's latest word on it wins
        frames = sorted(by_path.values(), key=lambda f: str(f.path))
        outcome["corrections"] = len(corrected)
        if missing:
            outcome["corrections_without_analysis"] = missing
        selects = sum(f.verdict.verdict == "select" for f in frames)
        check_classes(selects, len(frames) - selects, "to learn from")
        data = build_dataset(frames)
        seen = {f.path for f in base}
        new_shoots = np.unique(data.shoot[[f.path not in seen for f in frames]])
        test = comparison_split(data, np.isin(data.shoot, new_shoots))
        if shuffle_labels:  # a deliberately bad candidate (tests): the held-out stay true
            y = data.y.copy()
            rng = np.random.default_rng(0)
            y[~test] = rng.permutation(y[~test])
            data = replace(data, y=y)
        metrics = evaluate(data, test, config.train, config.rating)
        head = PersonalHead(current)
        p_current = np.array(
            [head.select_probability(x, e) for x, e in zip(data.X[test], data.E[test], strict=True)]
        )
        y_test = data.y[test]
        mine = _numbers(p_current >= head.threshold, y_test, data.E[test], data.shoot[test])
        theirs = {
            "recall": metrics["recall"],
            "recall_interval": metrics["recall_interval"],
            "precision": 0.0 if math.isnan(metrics["precision"]) else metrics["precision"],
            "precision_interval": metrics["precision_interval"],
        }
        outcome["held_out"] = {
            "shoots": int(len(np.unique(data.shoot[test]))),
            "selects": int(y_test.sum()),
            "rejects": int((1 - y_test).sum()),
        }
        outcome["candidate"], outcome["current"] = theirs, mine
        if not better(theirs, mine):
            outcome["outcome"] = "refused"
        else:
            card = describe(data, frames, metrics, config.train)
            card["learnt"] = {
                "reason": reason,
                "corrections": len(corrected),
                "previous_model": current.name,
                "compared": {"held_out": outcome["held_out"], "new": theirs, "previous": mine},
            }
            path = make_model(
                data, frames, card, metrics, config.train, models_folder(config), config.rating
            )
            card["seconds"] = {"total": round(time.time() - started, 1)}
            write_card(card, path)
            outcome["outcome"] = "swapped"
            outcome["model"] = str(path)
    except (LearnError, TrainError) as exc:
        outcome["outcome"] = "failed"
        outcome["message"] = str(exc)
    outcome["seconds"] = round(time.time() - started, 1)
    outcome["cpu_seconds"] = round(time.process_time() - cpu, 1)
    _write_json(learn_dir(config) / LAST_NAME, outcome)
    return outcome


def background_retrain(config: Config, reason: str, shuffle_labels: bool = False) -> None:
    """The retrain process's whole life: lowest priority, then ``retrain``."""
    lower_priority()
    try:
        retrain(config, reason=reason, shuffle_labels=shuffle_labels)
    except Exception as exc:  # noqa: BLE001 - the daemon reads the outcome, not a traceback
        _write_json(
            learn_dir(config) / LAST_NAME,
            {"at": time.time(), "reason": reason, "outcome": "failed", "message": repr(exc)},
        )


def outcome_line(outcome: dict) -> str:
    """The one log line for a retrain's outcome."""

    def pct(value) -> str:
        return "-" if value is None else f"{100 * value:.0f}%"

    def numbers(side: dict) -> str:
        low, high = side["recall_interval"]
        return (
            f"keeps {pct(side['recall'])} of the selects ({pct(low)}-{pct(high)}), "
            f"precision {pct(side['precision'])}"
        )

    what = outcome.get("outcome")
    if what == "failed":
        return f"learning failed ({outcome.get('reason')}): {outcome.get('message')}"
    held = outcome["held_out"]
    compared = (
        f"on {held['shoots']} held-out shoots ({held['selects']} selects, {held['rejects']} "
        f"rejects) it {numbers(outcome['candidate'])}; the model in use "
        f"{numbers(outcome['current'])}"
    )
    previous = Path(outcome.get("previous", "")).stem
    timing = f"{outcome['cpu_seconds']} s CPU"
    if what == "swapped":
        return (
            f"learnt from {outcome['corrections']} corrections ({outcome['reason']}): "
            f"{Path(outcome['model']).stem} rates the next photos instead of {previous}; "
            f"{compared} ({timing})"
        )
    return (
        f"a new model from {outcome['corrections']} corrections was refused, {previous} "
        f"stays: {compared} ({timing})"
    )


# --- rollback ----------------------------------------------------------------------------


def rollback(config: Config) -> tuple[Path, Path]:
    """Retire the newest model (kept in personal/retired/); returns (retired, now in use)."""
    from postselectd.analysis.personal import MODEL_GLOB

    folder = models_folder(config)
    models = sorted(folder.glob(MODEL_GLOB)) if folder.is_dir() else []
    if len(models) < 2:
        raise LearnError(
            f"{folder}: no earlier personal model to return to"
            + (f" ({models[0].name} is the only one)" if models else "")
        )
    newest = models[-1]
    retired = folder / RETIRED
    retired.mkdir(exist_ok=True)
    for path in [newest, *newest.parent.glob(newest.stem + ".*")]:
        if path.exists():
            os.replace(path, retired / path.name)
    _write_json(
        learn_dir(config) / LAST_NAME,
        {
            "at": time.time(),
            "outcome": "rolled back",
            "retired": str(retired / newest.name),
            "model": str(models[-2]),
        },
    )
    return retired / newest.name, models[-2]


# --- what it learnt (status) -------------------------------------------------------------


def summary(config: Config, journal: Journal | None) -> dict:
    """What `postselectd status` says of learning."""
    from postselectd.train import readiness

    off = why_off(config)
    model = current_model(config)
    report: dict = {"learning": not off, **({"off": off} if off else {})}
    corrections = journal.corrections() if journal is not None else []
    report["corrections"] = len(corrections)
    if model is not None:
        try:
            card = json.loads(model.with_suffix(".json").read_text())
        except (OSError, ValueError):
            card = {}
        since = model.stat().st_mtime
        report["model"] = {
            "path": str(model),
            "trained": card.get("created"),
            **{
                k: card.get(k)
                for k in (
                    "recall",
                    "recall_interval",
                    "precision",
                    "precision_interval",
                    "overruled_reasons",
                    "never_kept_people",
                )
            },
        }
        report["corrections_since_model"] = sum(1 for c in corrections if c[3] > since)
    else:
        ready = readiness(Verdict(p, v, CORRECTION, w) for p, v, w, _ in corrections)
        report["cold_start"] = ready.todo()
    last = last_try(config)
    if last:
        report["last_try"] = last
    return report
