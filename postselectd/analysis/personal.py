"""The personal head: P(this photographer selects the frame), learnt by `postselectd train`.

It reads what the Analyzer already computed for a frame, never anything else, so training
(postselectd/train/) and rating use one code path: the measurements, the default head's
class probabilities and verdict, the faces, whether a person is in the frame, and the
EfficientNet-Lite0 embedding.

Its output is a calibrated probability; its metadata carries the threshold chosen on
held-out shoots for the photographer's target recall. The rating policy rejects below
``REJECT_BELOW`` (its two-star line), so the Analyzer puts that threshold there
(``on_policy_scale``): a frame the personal model would keep is never a reject for a
middling score, which is the promise behind the target recall.

The shipped reasons (blur, closed eyes, exposure) still make a reject, except those the
model lists as overruled (``train.respect_reasons``): reasons the photographer's own selects
carry often enough to show they keep such frames. For those the model, which reads the
reasons among its features and learnt how much they weigh for this photographer, decides
(``taste_reasons``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from postselectd.analysis import measure
from postselectd.analysis.faces import Face, eyes_closed_reason, face_focus
from postselectd.analysis.runtime import ModelError, load_session
from postselectd.reasons import REASONS, Finding, as_finding

# Class order of the default head (models/keeper_head.onnx) and the reasons judge() gives.
DEFAULT_CLASSES = ("keeper", "out of focus", "motion blur", "overexposed", "underexposed")
REASON_NAMES = REASONS  # postselectd.reasons own the names; one reason_* feature each
FACE_FACTS = (
    "faces",
    "main_subjects",
    "largest_face",  # the largest face's width / the frame's long side
    "eyes_closed",
    "least_open_eye",  # lid gap / eye width of the least open main-subject eye
    "face_sharpness",
    "eye_sharpness",
)
# "A person is in the frame" (``person_presence``): 1 where a face is found, else how sure
# the backbone's own ImageNet classifier (its second output) is that the frame shows what
# people wear or are: the summed probability of the classes below. A face says it for the
# photos of people the face search finds; the garments say it for the ones it does not
# (soldiers from behind, a firefighter under a helmet, a woman with a pole by a lake), so
# the weight the head learns from the one carries to the other. On the 583 photos of
# bench/trust (294 with people): AUC 0.965 against 0.956 for "a face is found"; of the 301
# with no face found, the garments' score tells the 19 with people at AUC 0.85 (>= 0.05:
# 63% of them, 7% of the others). ImageNet-1k indices: clothing, headwear and armour worn
# on the body, and its three classes of people (ballplayer, groom, scuba diver).
PERSON_CLASSES = (
    399, 400, 411, 433, 439, 445, 451, 452, 457, 459, 461, 465, 474, 490, 501, 515, 518, 524,
    552, 560, 568, 578, 601, 608, 610, 614, 617, 638, 639, 643, 652, 655, 658, 667, 678, 689,
    697, 715, 735, 775, 793, 796, 808, 824, 834, 841, 842, 869, 887, 903, 906, 981, 982, 983,
)  # fmt: skip
# The garments' score counts from nothing at PERSON_NOTHING to sure at PERSON_SURE, on a log
# scale: on bench/trust, photos without people score 0.010 at the median and 0.033 at the
# 90th percentile, photos with people 0.33 at the median.
PERSON_NOTHING, PERSON_SURE = 0.01, 0.1
# The numbers the personal head reads beside the embedding, in this order. Written into
# the model's metadata: a model reads its own features by name, so one made before a
# feature was added (``person``) keeps working; one that names a feature this version does
# not compute is refused.
TASTE_FEATURES = (
    measure.FEATURE_NAMES
    + tuple(f"p_{name.replace(' ', '_')}" for name in DEFAULT_CLASSES)
    + ("keeper_probability",)
    + tuple(f"reason_{name.replace(' ', '_')}" for name in REASON_NAMES)
    + FACE_FACTS
    + ("person",)
)
OPEN_EYE = 0.35  # what "no face, no closed eye" looks like to the head
MODEL_GLOB = "personal-*.onnx"


def person_score(logits: np.ndarray) -> float:
    """The summed softmax probability of PERSON_CLASSES (``logits``: the backbone's 1000)."""
    z = np.asarray(logits, np.float64).reshape(-1)
    e = np.exp(z - z.max())
    return float(e[list(PERSON_CLASSES)].sum() / e.sum())


def person_presence(faces: tuple[Face, ...], score: float) -> float:
    """The ``person`` feature: 1 with a face found, else the garments' ``score`` (from
    ``person_score``) from 0 at PERSON_NOTHING to 1 at PERSON_SURE on a log scale."""
    if faces:
        return 1.0
    return measure.ramp(math.log(max(score, 1e-9)), math.log(PERSON_NOTHING), math.log(PERSON_SURE))


def upgrade_taste(taste: np.ndarray) -> np.ndarray:
    """A taste vector kept by a version before ``person`` (frames beside a model): the
    garments' score was not kept, so its ``person`` is whether a face was found."""
    taste = np.asarray(taste, np.float32)
    if taste.shape[-1] == len(TASTE_FEATURES) - 1:
        found = taste[..., TASTE_FEATURES.index("faces")] > 0
        taste = np.concatenate([taste, found[..., None].astype(np.float32)], axis=-1)
    return taste


def taste_features(
    measurements: np.ndarray,
    class_probabilities: dict[str, float],
    keeper_probability: float,
    reasons: tuple[str | Finding, ...],
    faces: tuple[Face, ...],
    long_side: int,
    garments: float,
) -> np.ndarray:
    """The TASTE_FEATURES vector of one analysed frame (float32). ``garments``: the
    backbone's ``person_score`` of the frame (0 when unknown: then ``person`` is whether a
    face was found).

    ``reasons``: the named ones, each ``reason_*`` feature its confidence (0 when not
    named; a bare name, from an analysis that kept no confidence, counts as sure). The
    confidence, not a 0/1 flag, so that training can tell the reasons that reject under
    the photographer's strictness from those that only ask for a check (train.fit.rejecting):
    a select with an eyes check was counted as lost and as evidence for overruling.
    """
    confidence = dict.fromkeys(REASON_NAMES, 0.0)
    for finding in map(as_finding, reasons):
        if finding.reason in confidence:
            confidence[finding.reason] = max(confidence[finding.reason], finding.confidence)
    focus = face_focus(faces)
    main = [f for f in faces if f.is_main_subject]
    openness = [
        e for f in main for e in (f.left_eye_openness, f.right_eye_openness) if e is not None
    ]
    facts = [
        float(len(faces)),
        float(len(main)),
        max((f.size for f in faces), default=0.0) / max(1, long_side),
        float(eyes_closed_reason(faces)),
        min(openness, default=OPEN_EYE),
        focus.face_sharpness,
        focus.eye_sharpness,
    ]
    vector = np.concatenate(
        [
            np.asarray(measurements, np.float32),
            [class_probabilities.get(name, 0.0) for name in DEFAULT_CLASSES],
            [keeper_probability],
            [confidence[name] for name in REASON_NAMES],
            facts,
            [person_presence(faces, garments)],
        ]
    ).astype(np.float32)
    assert vector.shape == (len(TASTE_FEATURES),)
    return vector


def on_policy_scale(p_select: float, threshold: float, reject_below: float) -> float:
    """P(select) warped piecewise-linearly so that ``threshold`` lands on ``reject_below``.

    Monotone, 0 stays 0 and 1 stays 1; with threshold == reject_below it is the identity.
    """
    t = min(max(threshold, 1e-6), 1 - 1e-6)
    if p_select < t:
        return reject_below * p_select / t
    return reject_below + (1 - reject_below) * (p_select - t) / (1 - t)


def taste_reasons(
    reasons: tuple[str, ...], p_select: float, threshold: float, overruled: frozenset[str]
) -> tuple[str, ...]:
    """The reasons that still make a reject: an overruled one is dropped when the personal
    model keeps the frame (and stays, as the explanation, when it does not)."""
    if p_select < threshold:
        return reasons
    return tuple(r for r in reasons if r not in overruled)


def newest_model(location: Path) -> Path:
    """``location`` itself when it is a model file, else the newest model in that folder."""
    location = Path(location).expanduser()
    if location.is_file():
        return location
    found = sorted(location.glob(MODEL_GLOB)) if location.is_dir() else []
    if not found:
        raise ModelError(
            f"model: personal, but there is no personal model in {location} yet: "
            "run `postselectd train PATH...` on folders you have rated, or set model: default"
        )
    return found[-1]  # names carry the training time: personal-YYYYMMDD-HHMMSS.onnx


class PersonalHead:
    """One personal model file (ONNX): taste features + embedding -> P(select)."""

    def __init__(self, location: Path, threads: int = 1, providers: list[str] | None = None):
        self.path = newest_model(location)
        self.session, meta = load_session(self.path, threads, providers)
        try:
            features = tuple(json.loads(meta["postselectd.features"]))
            self.threshold = float(meta["postselectd.threshold"])
            self.name = meta.get("postselectd.name", self.path.stem)
            # Models made before train.respect_reasons overrule nothing.
            self.overruled_reasons = frozenset(
                json.loads(meta.get("postselectd.overruled_reasons", "[]"))
            )
        except (KeyError, ValueError) as exc:
            raise ModelError(f"{self.path}: model metadata incomplete ({exc})") from None
        unknown = [name for name in features if name not in TASTE_FEATURES]
        if unknown:
            raise ModelError(
                f"{self.path}: made by another version of postselectd, reads "
                f"{', '.join(unknown)} (run `postselectd train` again)"
            )
        # The columns of TASTE_FEATURES this model reads, in its order.
        self.columns = [TASTE_FEATURES.index(name) for name in features]

    def select_probability(self, features: np.ndarray, embedding: np.ndarray) -> float:
        (p,) = self.session.run(
            None,
            {
                "features": np.asarray(features, np.float32)[self.columns][None],
                "embedding": np.asarray(embedding, np.float32)[None],
            },
        )
        return float(p.reshape(-1)[0])
