"""What the CNNs and measurements say about one preview.

``Analyzer.analyze(image) -> Analysis``: the only package that runs onnxruntime. The
keeper probability comes from a small trained head (models/keeper_head.onnx, made by
models/train_default.py) over postselectd's own measurements (multi-scale sharpness of
the sharpest part of the frame, blur direction, noise, exposure histogram) and the
EfficientNet-Lite0 embedding. It also says which kind of fault it sees; that becomes a
reason only with a majority of the probability (recall first).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from postselectd.analysis import measure
from postselectd.analysis.faces import (
    EYE_STATE_MIN_WIDTH_PX,
    EYES_CLOSED_BELOW,
    EYES_CLOSED_BELOW_LOOKING_DOWN,
    MIN_DETECTION_SCORE,
    Face,
    FaceAnalyzer,
    Pyramid,
)
from postselectd.analysis.measure import Exposure, Sharpness, ramp
from postselectd.analysis.personal import (
    PersonalHead,
    on_policy_scale,
    person_score,
    taste_features,
    taste_reasons,
)
from postselectd.analysis.runtime import ModelError, OnnxModel, choose_providers, models_dir
from postselectd.config import AnalysisConfig
from postselectd.reasons import (
    EYES_CLOSED,
    MOTION_BLUR,
    OUT_OF_FOCUS,
    OVEREXPOSED,
    REASONS,
    UNDEREXPOSED,
    Finding,
)

__all__ = ["Analysis", "Analyzer", "Face", "Finding", "ModelError", "REASONS"]

# Each reason comes with the confidence of its evidence (0..1); the policy (rating.py)
# decides from it, under the photographer's strictness, between reject, check and nothing.
# A reason is named (Analysis.reasons, the personal model's input) from this confidence.
NAMED_FROM = 0.45
# The policy's two-star line (rating.two_stars_from), where the personal model's
# threshold is put (analysis/personal.py).
REJECT_BELOW = 0.30
# Focus without faces: the head's P(out of focus) + P(motion blur), from BLUR_DOUBT (no
# confidence) to BLUR_SURE (full). On real keepers (eval/natural wallpapers: macro, bokeh,
# small subjects on sky and water) the sum stays <= 0.41 but for a foggy dusk (0.67) and
# an all-bokeh light sign (0.59); on the real blurred frames of eval/blur and samples/nef
# it is 0.49-0.97, >= 0.72 where the blur has no clear direction.
BLUR_DOUBT, BLUR_SURE = 0.30, 0.75
# Blur with a clear direction (structure-tensor coherence >= MOTION_CLEAR) is surer from
# a lower sum: the direction is evidence of its own (eval/blur-0002 and samples DSC_0101,
# motion blurred: 0.85-0.86 and 0.49-0.51; keepers with such coherence read <= 0.34).
MOTION_CLEAR, MOTION_BLUR_SURE = 0.80, 0.50
# ... halved where the frame's sharpest tiles hold clear detail (Laplacian variance at
# 1024 px; eval/blur: sharp frames 1285-40000, blurred 53-523).
DETAIL_PRESENT = 1500.0
# A moderate blur at a camera's preview size (a lens blur of ~15 px in a 24 MP frame, a
# 20 px shake), no main face: the head is unsure (its blur sum 0.2-0.5) and the sharpest
# tiles hold little detail. Such a frame asks for a check (NAMED_FROM), never the reject:
# fog, a kite on a clean sky and a storm look the same. Fitted on eval/natural's 28
# photos of >= 1620 px and their lens-blurred and shaken copies (bench/eval_sizes.py's
# degradations); measured on bench/eval_trust.py's other 552 known-good photos: 1 more
# checked (none rejected), and of their copies blurred the same way 240 instead of 178 of
# 423 lens-blurred, 211 instead of 184 shaken flagged (models/MODELS.md, keeper head).
SOFT_DETAIL_BELOW, SOFT_BLUR_FROM = 100.0, 0.20
# Blur that keeps its detail in one direction is motion; evenly lost detail is defocus.
MOTION_DIRECTIONALITY = 0.55
# On a preview of 512-1023 px (measure.Measurements.mixed_scales) the head reads sharp,
# soft-backgrounded frames as out of focus: there "out of focus" from the frame alone asks
# for a check at most (CHECK_AT_MOST). Measured (the known-good photos of
# bench/eval_trust.py shrunk to 1000 px): 9 of 583 rejected for it (four macro and bokeh
# frames, four birds, a squirrel; the 1000 px bird photos as they are); real photos blurred
# as a lens does (disk r 4 px at 1620 px, then shrunk) are flagged as often either way.
# Motion blur keeps its reject: its kind is the direction of the lost detail, measured at
# the frame's own size, and the one real motion-blurred frame of that size (eval/blur-0010,
# 800 px) needs it.
# Out of focus needs contrast to be read from: the detail the head reads (Laplacian
# variance) falls with the square of the tonal range, so a frame whose tones span less
# than DIM_RANGE (luma p99 - p01: fog, blue hour, a dim scene) reads as soft however well
# it is focused, while defocus keeps the frame's tones and loses only its detail. There
# "out of focus" from the frame alone asks for a check at most (CHECK_AT_MOST), as on a
# mixed-scale preview; motion blur, whose kind is the direction of the lost detail, keeps
# its reject. Measured: of bench/eval_trust.py's 583 known-good photos, the 39 under 0.55
# hold one rejected for focus (a misty blue-hour lake, eval/natural DarkestHour, 0.46; now
# a check) and one checked; eval/blur's real blurred frames span 0.63-0.93, and
# bench/eval_sizes.py's lens-blurred and shaken copies are flagged as before.
DIM_RANGE = 0.55
# Focus of people: the face's own detail at 48 px (eval/faceblur: sharp >= 0.49, blurred
# <= 0.48), sure from FACE_BLUR_SURE down; a face narrower than FACE_JUDGED_FROM px tells
# nothing, fully judged from FACE_JUDGED_FULL px.
FACE_SOFT_BELOW, FACE_BLUR_SURE = 0.45, 0.25
FACE_JUDGED_FROM, FACE_JUDGED_FULL = 30.0, 90.0
# A soft main face with another face sharp in the frame (a sure detection of a judgeable
# size): a passer-by in front of the subject, or the focus behind the subject. Which it is
# the photographer knows at a glance: a check at most (CHECK_AT_MOST), not the reject.
# Measured: a basketball huddle behind a blurred player (bench/eval_trust.py, event/stage:
# main face 172 px at 0.08, huddle faces 61-76 px at 1.05-1.74, detection 0.84 for one).
SHARP_ELSEWHERE_MIN_SCORE = 0.70
# A soft main face makes the reject only where the detector is sure it is a face (the
# tiles' own cut): the one-run search keeps weaker candidates
# (from faces.WHOLE_FRAME_MIN_SCORE) that the mesh's face flag confirms, and a bokeh patch
# beside a ring (bench/eval_trust.py, macro/bokeh, trust-0342's NEF preview: detection
# 0.30, face detail 0.29) was rejected as out of focus where the head saw no blur (0.03).
# Below it a soft face asks for a check at most (CHECK_AT_MOST), unless the head sees the
# blur too. Measured: bench/eval_trust.py NEF false rejects 8 -> 7 (that ring), photo
# column and the catching side unchanged; eval/faceblur's blurred faces rejected 90 -> 88
# of 102 (two detections at 0.45-0.47 now checks; flagged 97 either way);
# bench/eval_sizes.py at 800 px one good photo fewer rejected for focus.
FACE_FOCUS_MIN_SCORE = MIN_DETECTION_SCORE
# Eyes: the eye-state model's P(closed) of a main face (the more open of its two eyes, see
# faces.py) is the confidence itself: on held-out faces (bench/eval_eyes.py --data) P >= 0.75
# (normal: reject) calls 2 of 1321 open faces closed and catches 0.895 of 171 closed ones,
# P >= 0.45 (normal: check) 6 and 0.953. An eye narrower than
# EYE_STATE_MIN_WIDTH_PX gives no P: it cannot be told, and is no evidence either way.
# Without the model (a models folder of one's own), the iris model's lid gap / eye width:
# closed for sure from EYES_SHUT_SURE down, a face narrower than EYES_JUDGED_FROM px (its eye
# ~8 px wide) cannot be told, fully judged from EYES_JUDGED_FULL px.
EYES_SHUT_SURE = 0.10
EYES_JUDGED_FROM, EYES_JUDGED_FULL = 30.0, 60.0
# Eyes are read only on a face the detector is sure of: an alpaca's head (0.50), the back
# of a head (0.45) and a face cut by the frame (0.63) were read as blinks; the closed faces
# of eval/eyes-face score 0.74 and up (1st percentile).
EYES_MIN_DETECTION_SCORE = 0.70
# Eyes narrower than SMALL_EYES_PX (8-10 px, a 40-60 px face) are read only on a face the
# detector is surer of: where the face is that small, a doubtful detection's mesh places
# the eyes worst. Measured: a couple on a beach (eval_trust, photo column, eyes 8-9 px,
# face score 0.72, P 0.93-0.96) was the one good photo the smaller eyes newly rejected; the
# 11 closed faces of eval/eyes-face with eyes that small score 0.80-0.92.
SMALL_EYES_PX, SMALL_EYES_MIN_DETECTION_SCORE = 10.0, 0.75
# In a group, closed eyes ask for a check, never the reject: one blink is a frame to look
# at, not to throw away (another frame of the burst may have it, or a retouch fixes it),
# and when most of a group read closed they are looking down at something together (a
# bouquet, a ring, a child), a moment, not blinks (blinks that close together are rare).
GROUP_OF = 3
# A blink that asks for a check at most (normal strictness; strict still rejects it).
CHECK_AT_MOST = NAMED_FROM + 0.25
# A head turned this far from the camera (|yaw|, degrees) shows its far eye foreshortened
# and partly hidden, and a downcast gaze on it reads as shut: its blink asks for a check at
# most. Measured: 2 of the 123 closed faces of eval/eyes-face caught are turned >= 25 deg;
# 3 of the 10 blink rejects of good photos in bench/eval_trust.py (three-quarter portraits
# looking down) are.
TURNED_YAW = 25.0
# Two readers of the eyes: the eye-state model and the iris model's lid gap / eye width. A
# face whose lids stand this far apart (the mean of both eyes) is not surely blinking,
# whatever the model reads (a check at most): the closed faces of eval/eyes-face have lid
# gaps up to 0.26 (median 0.09), open faces from 0.16 (median 0.29). Measured: a baby
# looking up from a basket (bench/eval_trust.py, NEF column, lid gap 0.36, P 0.90) was a
# reject; no closed face of eval/eyes-face is lost.
LIDS_APART = 0.30
# Exposure. A raw holds stops the preview does not show: only lost information rejects,
# a frame that is merely dark or bright asks for a check at most (EXPOSURE_CHECK_MOST).
# The head's P(over/underexposed) counts from EXPOSURE_DOUBT (nothing) to EXPOSURE_SURE.
# Overexposure is sure only with a real area blown (>= BLOWN of the frame at 250+ grey, or
# a main face's centre blown from FACE_BLOWN_DOUBT to FACE_BLOWN_SURE of its pixels) and
# is halved with no highlight lost at all (< LOST_HIGHLIGHTS: a bright high-key frame is
# a choice). Underexposure is sure only for a frame that is nearly black (even its
# brightest colours, the 99th percentile of each pixel's brightest channel, below
# NEARLY_BLACK of full scale: a lens cap, a flash that did not fire); low-key frames read
# 0.86-1.0 from the head, so the head alone never rejects them, and it is halved where the
# main faces are lit (median luma >= LIT_FACE: a lit speaker on a dark stage).
EXPOSURE_DOUBT, EXPOSURE_SURE = 0.50, 0.80
EXPOSURE_CHECK_MOST = 0.60
BLOWN = 0.25
LOST_HIGHLIGHTS = 0.02
FACE_BLOWN_DOUBT, FACE_BLOWN_SURE = 0.15, 0.60
NEARLY_BLACK, BLACK = 0.12, 0.04
LIT_FACE = 70.0
# Underexposure from the histogram alone: the brightest 1% of the frame below 62% grey with
# the midtones at 20-35% (eval/blur-0015, samples DSC_0112).
UNDER_P99_BELOW = 0.62
UNDER_P50 = (0.20, 0.35)


@dataclass(frozen=True)
class Analysis:
    keeper_probability: float
    reasons: tuple[str, ...]
    sharpness: Sharpness
    exposure: Exposure
    model_version: str
    embedding: np.ndarray | None = field(default=None, repr=False, compare=False)
    # Every reason with its confidence; ``reasons`` names those >= NAMED_FROM.
    findings: tuple[Finding, ...] = ()
    # P(keeper), P(out of focus), P(motion blur), P(overexposed), P(underexposed): what the
    # head said of the whole frame (the personal model's input; its P(select) added).
    class_probabilities: tuple[tuple[str, float], ...] = ()
    # The same classes as judge() read them with the faces, whose keeper class is
    # keeper_probability (with the default model): the numbers behind the verdict.
    judged_probabilities: tuple[tuple[str, float], ...] = ()
    faces: tuple[Face, ...] = ()
    timings_ms: tuple[tuple[str, float], ...] = ()
    # The measurements in measure.FEATURE_NAMES order (what `postselectd train` learns from).
    measurements: np.ndarray | None = field(default=None, repr=False, compare=False)
    # What the personal model reads (personal.TASTE_FEATURES), from the shipped analysis
    # before a personal model overrules anything: the daemon learns from it (learn.py).
    taste: np.ndarray | None = field(default=None, repr=False, compare=False)
    # How sure the backbone is that the frame shows what people wear (personal.person_score).
    person_score: float = 0.0


class Analyzer:
    """Holds the ONNX sessions; one per worker process."""

    def __init__(self, config: AnalysisConfig | None = None):
        config = config or AnalysisConfig()
        providers = choose_providers(config.providers)
        directory = models_dir()
        self.backbone = OnnxModel(
            directory / "efficientnet_lite0.onnx",
            config.threads,
            providers,
            outputs=("embedding", "logits"),
        )
        self.head = KeeperHead(directory / "keeper_head.onnx", config.threads, providers)
        self.faces = FaceAnalyzer(directory, config.threads, providers)
        self.providers = providers
        self.model_version = (
            f"keeper_head-{self.head.version}+{self.backbone.name}-{self.backbone.version}"
        )
        # model: personal: the photographer's own head gives the keeper probability;
        # the reasons stay the default analysis's, except those the photographer shows
        # they keep (analysis/personal.py).
        self.personal: PersonalHead | None = None
        if config.personal_model is not None:
            self.personal = PersonalHead(config.personal_model, config.threads, providers)
            self.model_version = f"{self.personal.name}+{self.model_version}"

    @property
    def providers_in_use(self) -> list[str]:
        """What onnxruntime gave the sessions: it falls back to the CPU where an
        accelerator's provider is offered but cannot start (no driver, no device)."""
        return list(self.backbone.session.get_providers())

    def analyze(
        self,
        image: np.ndarray | Image.Image,
        detail: Callable[[float], Image.Image | None] | None = None,
    ) -> Analysis:
        """``image``: the upright RGB preview. Every stage resamples from one Pillow image: the
        pipeline passes the decoded one (``Preview.picture``), an array is copied once.

        ``detail``: where the file holds a larger image of the same frame (a raw's full-size
        preview, a JPEG decoded at a fraction of its size: ``Preview.detail``), a function
        that decodes it upright with at least the given long side; the eyes of a main
        subject too small to tell in ``image`` are read there (``FaceAnalyzer.analyze``).
        """
        picture = measure.as_picture(image)
        timings: list[tuple[str, float]] = []

        def timed(stage: str, start: float) -> None:
            timings.append((stage, (time.perf_counter() - start) * 1000))

        start = time.perf_counter()
        measured = measure.measure_all(picture)
        timed("measure", start)
        start = time.perf_counter()
        # The face search's halvings of the picture; the backbone reads from them too.
        pyramid = Pyramid(picture)
        halvings = [level for level, _ in pyramid.levels[1:]]
        backbone = self.backbone.run(self.backbone.prepare(picture, halvings)[None])
        embedding = backbone["embedding"][0].astype(np.float32)
        garments = person_score(backbone["logits"][0])
        timed("backbone", start)
        start = time.perf_counter()
        probabilities = self.head.classify(measured.features, embedding)
        timed("keeper_head", start)
        start = time.perf_counter()
        face_steps: list[tuple[str, float]] = []
        faces = self.faces.analyze(picture, face_steps, pyramid, detail)
        timed("faces", start)
        timings += face_steps

        judged, findings = judge(probabilities, measured, faces, picture)
        keeper = judged[KEEPER]
        reasons = named(findings)
        class_probabilities = tuple((k, round(float(v), 4)) for k, v in probabilities.items())
        judged_probabilities = tuple((k, round(float(v), 4)) for k, v in judged.items())
        taste = taste_features(
            measured.features,
            probabilities,
            keeper,
            tuple(f for f in findings if f.reason in reasons),
            faces,
            max(picture.size),
            garments,
        )
        if self.personal is not None:
            start = time.perf_counter()
            p_select = self.personal.select_probability(taste, embedding)
            keeper = on_policy_scale(p_select, self.personal.threshold, REJECT_BELOW)
            reasons = taste_reasons(
                reasons, p_select, self.personal.threshold, self.personal.overruled_reasons
            )
            findings = tuple(f for f in findings if f.reason in reasons)
            class_probabilities += (("select", round(p_select, 4)),)
            judged_probabilities += (("select", round(p_select, 4)),)
            timed("personal_head", start)
        return Analysis(
            keeper_probability=round(float(keeper), 4),
            reasons=reasons,
            findings=findings,
            sharpness=measured.sharpness,
            exposure=measured.exposure,
            model_version=self.model_version,
            embedding=embedding,
            timings_ms=tuple(timings),
            class_probabilities=class_probabilities,
            judged_probabilities=judged_probabilities,
            faces=faces,
            measurements=measured.features,
            taste=taste,
            person_score=round(garments, 4),
        )


def named(findings: tuple[Finding, ...]) -> tuple[str, ...]:
    return tuple(f.reason for f in findings if f.confidence >= NAMED_FROM)


def judge(
    probabilities: dict[str, float],
    measured: measure.Measurements,
    faces: tuple[Face, ...],
    image: np.ndarray | Image.Image,
) -> tuple[dict[str, float], tuple[Finding, ...]]:
    """The head's classes as the faces make them read (their keeper class is the keeper
    probability), and every reason with the confidence of its evidence.

    People come first: with a main subject's face in the frame, its face decides focus (a
    sharp face on a soft background is a keeper, a soft face is not), whatever the frame
    as a whole says. Evidence that cannot be judged (a face too small to see its eyes, a
    bright frame with no highlight lost) lowers the confidence, never raises it.
    """
    p = dict(probabilities)
    main = [f for f in faces if f.is_main_subject]
    findings = [
        _eyes(main),
        _focus(p, measured, main, faces),
        _exposure(p, measured, main, image),
    ]
    return p, tuple(f for f in findings if f is not None and f.confidence > 0)


def _eyes(main: list[Face]) -> Finding | None:
    """Closed eyes of the main subjects; in a group, how many of those judged blinked."""
    judged = [c for c in map(_eyes_closed, main) if c is not None]
    blinked = [c for c in judged if c >= NAMED_FROM]
    if not judged:
        return None
    confidence = max(judged)
    if len(main) >= GROUP_OF:  # a group however many of its eyes could be told
        confidence = min(confidence, CHECK_AT_MOST)
    detail = f"{len(blinked)} of {len(judged)}" if len(judged) > 1 else ""
    return Finding(EYES_CLOSED, round(confidence, 3), detail, count=len(blinked))


def _eyes_closed(face: Face) -> float | None:
    """How sure it is that this face blinked (0..1), None when its eyes cannot be told."""
    sure = _blink_evidence(face)
    # Eyes too small to tell in the preview and read in the file's larger image
    # (faces.DETAIL_EYES_BELOW_PX) ask for a check at most, like a turned head's: the reject
    # line was set on eyes read in previews, and no set of small faces in camera files
    # measures it there yet. Measured (bench/eval_trust.py, NEF column): the one good photo
    # they would reject is a couple about to kiss, her eyes shut (P 0.92 at 12.8 px;
    # "cannot tell" at 6.9 px in the preview).
    if sure is not None and (abs(face.yaw) >= TURNED_YAW or face.eyes_read_closer):
        return min(sure, CHECK_AT_MOST)
    return sure


def _blink_evidence(face: Face) -> float | None:
    if face.score < EYES_MIN_DETECTION_SCORE:
        return None
    if (
        face.eye_width is not None
        and face.eye_width < SMALL_EYES_PX
        and face.score < SMALL_EYES_MIN_DETECTION_SCORE
    ):
        return None
    if face.eyes_closed_probability is not None:
        gap = _lid_gap(face)
        if gap is not None and gap >= LIDS_APART:  # the lids say open: not sure
            return min(face.eyes_closed_probability, CHECK_AT_MOST)
        return face.eyes_closed_probability
    if face.eye_width is not None and face.eye_width < EYE_STATE_MIN_WIDTH_PX:
        return None  # too few pixels: "cannot tell" is not "closed"
    if face.left_eye_openness is None or face.right_eye_openness is None:
        return None
    if (
        face.left_eye_closed_probability is not None
        or face.right_eye_closed_probability is not None
    ):
        return None  # the model read one eye only: one eye alone is no blink
    # No eye-state model: the lid gap.
    seen = ramp(face.size, EYES_JUDGED_FROM, EYES_JUDGED_FULL)
    if seen <= 0:
        return None
    limit = EYES_CLOSED_BELOW_LOOKING_DOWN if face.looking_down else EYES_CLOSED_BELOW
    openness = _lid_gap(face)
    sure = EYES_SHUT_SURE * limit / EYES_CLOSED_BELOW
    return ramp(openness, limit, sure) * seen


def _lid_gap(face: Face) -> float | None:
    """The iris model's lid gap / eye width, the mean of both eyes (None if one is unread)."""
    if face.left_eye_openness is None or face.right_eye_openness is None:
        return None
    return (face.left_eye_openness + face.right_eye_openness) / 2


def _focus(
    p: dict[str, float],
    measured: measure.Measurements,
    main: list[Face],
    faces: tuple[Face, ...],
) -> Finding | None:
    """Out of focus or motion blur; ``p`` is updated where a sharp face shows that what the
    head took for blur is the background. ``faces``: every face found, main or not."""
    kind = (
        MOTION_BLUR
        if measured.sharpness.anisotropy >= MOTION_DIRECTIONALITY
        or p[MOTION_BLUR] > p[OUT_OF_FOCUS] * 2
        else OUT_OF_FOCUS
    )
    directional = measured.sharpness.anisotropy >= MOTION_CLEAR
    sure = MOTION_BLUR_SURE if directional else BLUR_SURE
    blur = p[OUT_OF_FOCUS] + p[MOTION_BLUR]
    frame = ramp(blur, BLUR_DOUBT, sure)
    if measured.sharpness.subject >= DETAIL_PRESENT:
        frame /= 2
    if kind == OUT_OF_FOCUS and (measured.mixed_scales or measured.tonal_range < DIM_RANGE):
        frame = min(frame, CHECK_AT_MOST)
    if not main:
        # A moderate blur at camera size: the head half sees it, the detail confirms it.
        soft = measured.sharpness.subject < SOFT_DETAIL_BELOW and blur >= SOFT_BLUR_FROM
        if soft and measured.full_scale:
            frame = max(frame, NAMED_FROM)
        return Finding(kind, round(frame, 3))
    # The sharpest main subject decides: with shallow depth of field one sharp face in a
    # group is the photographer's choice.
    face = max(main, key=lambda f: f.face_sharpness)
    if face.face_sharpness >= FACE_SOFT_BELOW:
        # The subject is sharp: what the head took for blur is the background.
        p[KEEPER] += p[OUT_OF_FOCUS] + p[MOTION_BLUR]
        p[OUT_OF_FOCUS] = p[MOTION_BLUR] = 0.0
        return None
    # A soft face: its own detail says how sure (a small face says little), and a frame the
    # head finds blurred too confirms it (eval/blur-0010: motion streaks, face detail 0.44).
    confidence = ramp(face.face_sharpness, FACE_SOFT_BELOW, FACE_BLUR_SURE) * ramp(
        face.size, FACE_JUDGED_FROM, FACE_JUDGED_FULL
    )
    if face.score < FACE_FOCUS_MIN_SCORE or any(
        f.face_sharpness >= FACE_SOFT_BELOW
        and f.size >= FACE_JUDGED_FROM
        and f.score >= SHARP_ELSEWHERE_MIN_SCORE
        for f in faces
    ):
        confidence = min(confidence, CHECK_AT_MOST)
    return Finding(kind, round(max(confidence, frame), 3))


def _exposure(
    p: dict[str, float],
    measured: measure.Measurements,
    main: list[Face],
    image: np.ndarray | Image.Image,
) -> Finding | None:
    features = dict(zip(measure.FEATURE_NAMES, measured.features.tolist(), strict=True))
    blown_face, face_luma = _faces_light(main, image)
    over = ramp(p[OVEREXPOSED], EXPOSURE_DOUBT, EXPOSURE_SURE)
    if features["clipped_highlights"] < LOST_HIGHLIGHTS:
        over /= 2
    if features["clipped_highlights"] < BLOWN:
        over = min(over, EXPOSURE_CHECK_MOST)
    over = max(over, ramp(blown_face, FACE_BLOWN_DOUBT, FACE_BLOWN_SURE))
    under = ramp(p[UNDEREXPOSED], EXPOSURE_DOUBT, EXPOSURE_SURE)
    if (
        features["luma_p99"] < UNDER_P99_BELOW
        and UNDER_P50[0] <= features["luma_p50"] <= UNDER_P50[1]
    ):
        under = max(under, EXPOSURE_CHECK_MOST)
    if under > 0:
        brightest = _brightest_colours(image)
        under = max(min(under, EXPOSURE_CHECK_MOST), ramp(brightest, NEARLY_BLACK, BLACK))
        if face_luma is not None and face_luma >= LIT_FACE:
            under /= 2
    if over > 0 and under > 0:
        return None  # the evidence contradicts itself
    if over > 0:
        return Finding(OVEREXPOSED, round(over, 3))
    if under > 0:
        return Finding(UNDEREXPOSED, round(under, 3))
    return None


def _brightest_colours(image: np.ndarray | Image.Image) -> float:
    """99th percentile of each pixel's brightest channel (0..1), on an 1/8 reduction: a
    red flower on black is bright where its luma is not."""
    small = np.asarray(measure.as_picture(image).reduce(8)).max(axis=2)
    return float(np.percentile(small, 99)) / 255.0


def _faces_light(main: list[Face], image: np.ndarray | Image.Image) -> tuple[float, float | None]:
    """Main subjects' skin: the blown fraction (luma >= 250: white, not a saturated
    channel of warm skin) and mean luma of the centre half of each main face, medians over
    faces; (0, None) without faces."""
    if not main:
        return 0.0, None
    picture = measure.as_picture(image)
    width, height = picture.size
    clipped, luma = [], []
    for face in main:
        x, y, w, h = (int(v) for v in face.box)
        x0, y0 = max(0, x + w // 4), max(0, y + h // 4)
        # Cut at the frame's edge (Pillow would pad with black): only the face's own pixels.
        x1, y1 = min(width, x0 + max(1, w // 2)), min(height, y0 + max(1, h // 2))
        if x1 <= x0 or y1 <= y0:
            continue
        skin = measure.luminance(np.asarray(picture.crop((x0, y0, x1, y1))))
        clipped.append(float((skin >= 250).mean()))
        luma.append(float(skin.mean()))
    if not clipped:
        return 0.0, None
    return float(np.median(clipped)), float(np.median(luma))


KEEPER = "keeper"


class KeeperHead:
    """The trained head (models/train_default.py): measurements + embedding -> classes."""

    def __init__(self, path, threads: int, providers: list[str]):
        import json

        from postselectd.analysis.runtime import load_session

        self.session, meta = load_session(path, threads, providers)
        try:
            self.classes = tuple(json.loads(meta["postselectd.classes"]))
            features = tuple(json.loads(meta["postselectd.features"]))
        except (KeyError, ValueError) as exc:
            raise ModelError(f"{path}: model metadata incomplete ({exc})") from None
        if features != measure.FEATURE_NAMES or self.classes[0] != KEEPER:
            raise ModelError(
                f"{path}: trained for other measurements than this postselectd computes "
                "(retrain with models/train_default.py)"
            )
        self.version = meta.get("postselectd.version", "0")

    def classify(self, features: np.ndarray, embedding: np.ndarray) -> dict[str, float]:
        (probabilities,) = self.session.run(
            None,
            {"features": features[None].astype(np.float32), "embedding": embedding[None]},
        )
        return dict(zip(self.classes, probabilities[0].tolist(), strict=True))
