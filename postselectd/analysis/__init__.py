"""What the CNNs and measurements say about one preview.

``Analyzer.analyze(preview) -> Analysis``: the only package that runs onnxruntime. The
keeper probability here is the first version (issue "Rating quality" replaces it with a
trained head): it is driven by the subject's sharpness and the exposure, and it is
deliberately generous — recall first, a weak signal never rejects a frame.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from postselectd.analysis import measure
from postselectd.analysis.measure import Exposure, Sharpness
from postselectd.analysis.runtime import ModelError, OnnxModel, choose_providers, models_dir
from postselectd.config import AnalysisConfig

__all__ = ["Analysis", "Analyzer", "ModelError", "REASONS"]

# The fixed vocabulary of reasons, as the photographer reads them in the editor.
OUT_OF_FOCUS = "out of focus"
MOTION_BLUR = "motion blur"
OVEREXPOSED = "overexposed"
UNDEREXPOSED = "underexposed"
EYES_CLOSED = "eyes closed"
REASONS = (EYES_CLOSED, OUT_OF_FOCUS, MOTION_BLUR, OVEREXPOSED, UNDEREXPOSED)

# Subject sharpness (Laplacian variance at 1024 px) that is an even bet; measured on
# ../shared/eval/blur: sharp frames 1285-40000, blurred ones 53-522.
SHARPNESS_MIDPOINT = 700.0
SHARPNESS_SLOPE = 6.0  # per decade
# Below this probability of being sharp the frame carries a blur reason.
BLURRED_BELOW = 0.35
# Gradient coherence above which lost detail is called motion blur rather than defocus.
MOTION_ANISOTROPY = 0.6


@dataclass(frozen=True)
class Analysis:
    keeper_probability: float
    reasons: tuple[str, ...]
    sharpness: Sharpness
    exposure: Exposure
    model_version: str
    embedding: np.ndarray | None = field(default=None, repr=False, compare=False)
    timings_ms: tuple[tuple[str, float], ...] = ()


class Analyzer:
    """Holds the ONNX sessions; one per worker process."""

    def __init__(self, config: AnalysisConfig | None = None):
        config = config or AnalysisConfig()
        providers = choose_providers(config.providers)
        directory = models_dir()
        self.backbone = OnnxModel(directory / "efficientnet_lite0.onnx", config.threads, providers)
        self.providers = providers
        self.model_version = f"postselectd-v1+{self.backbone.name}-{self.backbone.version}"

    def analyze(self, image: np.ndarray) -> Analysis:
        timings: list[tuple[str, float]] = []
        start = time.perf_counter()
        gray = measure.luminance(image)
        sharp = measure.sharpness(gray)
        expo = measure.exposure(gray)
        timings.append(("measure", (time.perf_counter() - start) * 1000))

        start = time.perf_counter()
        batch = self.backbone.prepare(image)[None]
        outputs = self.backbone.run(batch)
        embedding = outputs.get("embedding")
        embedding = None if embedding is None else embedding[0].astype(np.float32)
        timings.append(("backbone", (time.perf_counter() - start) * 1000))

        probability, reasons = first_keeper_probability(sharp, expo)
        return Analysis(
            keeper_probability=probability,
            reasons=reasons,
            sharpness=sharp,
            exposure=expo,
            model_version=self.model_version,
            embedding=embedding,
            timings_ms=tuple(timings),
        )


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, x))))


def first_keeper_probability(sharp: Sharpness, expo: Exposure) -> tuple[float, tuple[str, ...]]:
    """Probability that a photographer keeps the frame, and the hard reasons against it."""
    reasons: list[str] = []
    p_sharp = _sigmoid(
        SHARPNESS_SLOPE * (math.log10(max(sharp.subject, 1e-3)) - math.log10(SHARPNESS_MIDPOINT))
    )
    if p_sharp < BLURRED_BELOW:
        reasons.append(MOTION_BLUR if sharp.anisotropy >= MOTION_ANISOTROPY else OUT_OF_FOCUS)
    p_exposure = 1.0
    # Generous: high-key and low-key frames are intentional; only the extreme is a reason.
    if expo.clipped_highlights > 0.30 or expo.median_luminance > 235:
        reasons.append(OVEREXPOSED)
        p_exposure = 0.25
    elif expo.crushed_shadows > 0.50 or expo.median_luminance < 12:
        reasons.append(UNDEREXPOSED)
        p_exposure = 0.25
    return round(p_sharp * p_exposure, 4), tuple(reasons)
