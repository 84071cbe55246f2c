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
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from postselectd.analysis import measure
from postselectd.analysis.faces import (
    Face,
    FaceAnalyzer,
    Pyramid,
    eyes_closed_reason,
    face_focus,
)
from postselectd.analysis.measure import Exposure, Sharpness
from postselectd.analysis.personal import (
    PersonalHead,
    on_policy_scale,
    taste_features,
    taste_reasons,
)
from postselectd.analysis.runtime import ModelError, OnnxModel, choose_providers, models_dir
from postselectd.config import AnalysisConfig

__all__ = ["Analysis", "Analyzer", "Face", "ModelError", "REASONS"]

# The fixed vocabulary of reasons, as the photographer reads them in the editor.
OUT_OF_FOCUS = "out of focus"
MOTION_BLUR = "motion blur"
OVEREXPOSED = "overexposed"
UNDEREXPOSED = "underexposed"
EYES_CLOSED = "eyes closed"
REASONS = (EYES_CLOSED, OUT_OF_FOCUS, MOTION_BLUR, OVEREXPOSED, UNDEREXPOSED)

# A reason is given when its class has the majority of the head's probability, or when the
# frame is a reject anyway (keeper probability below the policy's two-star line) and this
# is the most likely fault: recall first, a weak signal never rejects a frame.
REASON_MIN_PROBABILITY = 0.5
REJECT_BELOW = 0.30
# Strong evidence of a missed shot without faces: the sharpest tenth of the frame is still
# soft. eval/blur: sharp frames 1285-40000, blurred ones 53-522 (Laplacian variance of the
# sharpest tiles at 1024 px).
BLURRED_SUBJECT_BELOW = 700.0
# Blur that keeps its detail in one direction is motion; evenly lost detail is defocus.
MOTION_DIRECTIONALITY = 0.55
# Keeper probability at most this when the main subjects' faces reject the frame.
FACE_REJECT_PROBABILITY = 0.15
# The face's own detail at 48 px; eval/faceblur: sharp >= 0.49, blurred <= 0.48.
FACE_SOFT_BELOW = 0.45
# Underexposure: the brightest 1% of the frame stays below 62% grey while the midtones
# sit at 20-35% (a histogram cut short on the right). Intentional low-key frames keep
# some highlights; one of 123 natural photos (a dark wallpaper) still trips it.
UNDER_P99_BELOW = 0.62
UNDER_P50 = (0.20, 0.35)
# Overexposure of people: main subjects' faces mostly bright with clipped skin.
FACE_CLIPPED_ABOVE = 0.10
FACE_LUMA_ABOVE = 160.0


@dataclass(frozen=True)
class Analysis:
    keeper_probability: float
    reasons: tuple[str, ...]
    sharpness: Sharpness
    exposure: Exposure
    model_version: str
    embedding: np.ndarray | None = field(default=None, repr=False, compare=False)
    # P(keeper), P(out of focus), P(motion blur), P(overexposed), P(underexposed)
    class_probabilities: tuple[tuple[str, float], ...] = ()
    faces: tuple[Face, ...] = ()
    timings_ms: tuple[tuple[str, float], ...] = ()
    # The measurements in measure.FEATURE_NAMES order (what `postselectd train` learns from).
    measurements: np.ndarray | None = field(default=None, repr=False, compare=False)


class Analyzer:
    """Holds the ONNX sessions; one per worker process."""

    def __init__(self, config: AnalysisConfig | None = None):
        config = config or AnalysisConfig()
        providers = choose_providers(config.providers)
        directory = models_dir()
        self.backbone = OnnxModel(
            directory / "efficientnet_lite0.onnx", config.threads, providers, outputs=("embedding",)
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

    def analyze(self, image: np.ndarray | Image.Image) -> Analysis:
        """``image``: the upright RGB preview. Every stage resamples from one Pillow image: the
        pipeline passes the decoded one (``Preview.picture``), an array is copied once."""
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
        embedding = self.backbone.run(self.backbone.prepare(picture, halvings)[None])
        embedding = embedding["embedding"][0]
        embedding = embedding.astype(np.float32)
        timed("backbone", start)
        start = time.perf_counter()
        probabilities = self.head.classify(measured.features, embedding)
        timed("keeper_head", start)
        start = time.perf_counter()
        face_steps: list[tuple[str, float]] = []
        faces = self.faces.analyze(picture, face_steps, pyramid)
        timed("faces", start)
        timings += face_steps

        keeper, reasons = judge(probabilities, measured, faces, picture)
        class_probabilities = tuple((k, round(float(v), 4)) for k, v in probabilities.items())
        if self.personal is not None:
            start = time.perf_counter()
            taste = taste_features(
                measured.features, probabilities, keeper, reasons, faces, max(picture.size)
            )
            p_select = self.personal.select_probability(taste, embedding)
            keeper = on_policy_scale(p_select, self.personal.threshold, REJECT_BELOW)
            reasons = taste_reasons(
                reasons, p_select, self.personal.threshold, self.personal.overruled_reasons
            )
            class_probabilities += (("select", round(p_select, 4)),)
            timed("personal_head", start)
        return Analysis(
            keeper_probability=round(float(keeper), 4),
            reasons=reasons,
            sharpness=measured.sharpness,
            exposure=measured.exposure,
            model_version=self.model_version,
            embedding=embedding,
            timings_ms=tuple(timings),
            class_probabilities=class_probabilities,
            faces=faces,
            measurements=measured.features,
        )


def judge(
    probabilities: dict[str, float],
    measured: measure.Measurements,
    faces: tuple[Face, ...],
    image: np.ndarray | Image.Image,
) -> tuple[float, tuple[str, ...]]:
    """Keeper probability and reasons from the head, the measurements and the faces.

    People come first: with a main subject's face in the frame, its eyes and face decide
    focus (a sharp face on a soft background is a keeper, a soft face is not), whatever
    the frame as a whole says.
    """
    p = dict(probabilities)
    reasons: list[str] = []
    if eyes_closed_reason(faces):
        reasons.append(EYES_CLOSED)

    blur_kind = (
        MOTION_BLUR
        if measured.sharpness.anisotropy >= MOTION_DIRECTIONALITY
        or p[MOTION_BLUR] > p[OUT_OF_FOCUS] * 2
        else OUT_OF_FOCUS
    )
    focus = face_focus(faces)
    if focus.main_subjects:
        # The face's detail at its own scale decides; the eyes' edge crispness alone is
        # fooled by motion streaks (eval/blur-0010) and by upscaled previews.
        if focus.face_sharpness >= FACE_SOFT_BELOW:
            # The subject is sharp: what the head took for blur is the background.
            p[KEEPER] += p[OUT_OF_FOCUS] + p[MOTION_BLUR]
            p[OUT_OF_FOCUS] = p[MOTION_BLUR] = 0.0
        else:
            reasons.append(blur_kind)
    else:
        blur = p[OUT_OF_FOCUS] + p[MOTION_BLUR]
        if (
            measured.sharpness.subject < BLURRED_SUBJECT_BELOW
            or blur >= REASON_MIN_PROBABILITY
            or (p[KEEPER] < REJECT_BELOW and blur >= max(p[OVEREXPOSED], p[UNDEREXPOSED]))
        ):
            reasons.append(blur_kind)

    features = dict(zip(measure.FEATURE_NAMES, measured.features.tolist(), strict=True))
    under = p[UNDEREXPOSED] >= REASON_MIN_PROBABILITY or (
        features["luma_p99"] < UNDER_P99_BELOW
        and UNDER_P50[0] <= features["luma_p50"] <= UNDER_P50[1]
    )
    over = p[OVEREXPOSED] >= REASON_MIN_PROBABILITY or _faces_overexposed(faces, image)
    if over and not under:
        reasons.append(OVEREXPOSED)
    elif under and not over:
        reasons.append(UNDEREXPOSED)
    keeper = p[KEEPER]
    if EYES_CLOSED in reasons or (
        focus.main_subjects and set(reasons) & {OUT_OF_FOCUS, MOTION_BLUR}
    ):
        # The people in it say reject, whatever the frame as a whole looks like: the
        # probability must not contradict the verdict (a sharp closed-eye face read 1.00).
        keeper = min(keeper, FACE_REJECT_PROBABILITY)
    return keeper, tuple(reasons)


def _faces_overexposed(faces: tuple[Face, ...], image: np.ndarray | Image.Image) -> bool:
    """Main subjects' skin clipped: the centre half of each main face, median over faces."""
    main = [face for face in faces if face.is_main_subject]
    if not main:
        return False
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
        skin = np.asarray(picture.crop((x0, y0, x1, y1)))
        clipped.append(float((skin.max(axis=2) >= 250).mean()))
        luma.append(float(measure.luminance(skin).mean()))
    if not clipped:
        return False
    return (
        float(np.median(clipped)) >= FACE_CLIPPED_ABOVE
        and float(np.median(luma)) >= FACE_LUMA_ABOVE
    )


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
