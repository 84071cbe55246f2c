"""Technical measurements in plain numpy: sharpness, blur direction, exposure.

These are the numbers behind the reasons a photographer reads ("out of focus",
"motion blur", "overexposed"); they are measured on the preview at a fixed working
scale so a number means the same thing for a 1620 px and a 6000 px preview.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

# Long side (px) at which sharpness is measured.
WORK_SIZE = 1024
GRID = 8  # sharpness is measured per tile of an 8x8 grid


@dataclass(frozen=True)
class Sharpness:
    # Laplacian variance of the sharpest tiles: the subject, not the (maybe soft) background.
    subject: float
    # Laplacian variance of the whole frame: the global number many cullers use.
    overall: float
    # 0 = blur has no direction (defocus), 1 = all detail lost in one direction (motion).
    anisotropy: float


@dataclass(frozen=True)
class Exposure:
    mean_luminance: float  # 0..255
    clipped_highlights: float  # fraction of pixels at or above 250
    crushed_shadows: float  # fraction of pixels at or below 5
    median_luminance: float


def ramp(value: float, nothing: float, sure: float) -> float:
    """0 at ``nothing``, 1 at ``sure`` (either way round), linear between."""
    return float(min(1.0, max(0.0, (value - nothing) / (sure - nothing))))


def as_picture(image: np.ndarray | Image.Image) -> Image.Image:
    """The preview as the Pillow image every stage resamples from: a Pillow image as it is
    (the pipeline's, decoded once), an H x W x 3 uint8 array copied into one (~1 ms)."""
    return image if isinstance(image, Image.Image) else Image.fromarray(image)


def luminance(image: np.ndarray) -> np.ndarray:
    """Rec. 601 luma as float32, 0..255."""
    rgb = image.astype(np.float32)
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def downscale(gray: np.ndarray, long_side: int = WORK_SIZE) -> np.ndarray:
    """Box-filter downscale by an integer factor so the long side is >= long_side."""
    factor = max(1, max(gray.shape) // long_side)
    if factor == 1:
        return gray
    h = gray.shape[0] // factor * factor
    w = gray.shape[1] // factor * factor
    g = gray[:h, :w]
    if factor == 2:
        # 4x faster than the reshaped mean, and the same numbers: the luma here holds
        # whole (or quarter) grey levels, whose sums float32 keeps exact in any order.
        return (g[0::2, 0::2] + g[1::2, 0::2] + g[0::2, 1::2] + g[1::2, 1::2]) * np.float32(0.25)
    return g.reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))


def laplacian(gray: np.ndarray) -> np.ndarray:
    g = gray
    return g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:] - 4.0 * g[1:-1, 1:-1]


def sharpness(gray: np.ndarray) -> Sharpness:
    g = downscale(gray)
    if min(g.shape) < 16:
        return Sharpness(subject=0.0, overall=0.0, anisotropy=0.0)
    lap = laplacian(g)
    overall = float(lap.var())
    th, tw = lap.shape[0] // GRID, lap.shape[1] // GRID
    tiles = lap[: th * GRID, : tw * GRID].reshape(GRID, th, GRID, tw).var(axis=(1, 3)).ravel()
    # Mean of the sharpest 10% of tiles: a small sharp subject on a soft background counts.
    top = np.sort(tiles)[-max(1, tiles.size // 10) :]
    subject = float(top.mean())
    return Sharpness(subject=subject, overall=overall, anisotropy=_anisotropy(g, tiles, th, tw))


def _anisotropy(g: np.ndarray, tiles: np.ndarray, th: int, tw: int) -> float:
    """Coherence of the gradient structure tensor over the most detailed tiles.

    Motion blur smears detail along one direction, so what gradient energy is left points
    one way; defocus removes it evenly. Measured on the detailed tiles only, so flat sky
    does not dilute it.
    """
    order = np.argsort(tiles)[::-1][: max(4, tiles.size // 4)]
    jxx = jyy = jxy = 0.0
    for index in order:
        # The tile's central differences (tiles are on the Laplacian's grid, one pixel in
        # from the edges), from its own pixels plus a one-pixel border: only the tiles
        # used, a quarter of the frame.
        r, c = divmod(int(index), GRID)
        patch = g[r * th : (r + 1) * th + 2, c * tw : (c + 1) * tw + 2]
        sx = patch[1:-1, 2:] - patch[1:-1, :-2]
        sy = patch[2:, 1:-1] - patch[:-2, 1:-1]
        jxx += float((sx * sx).sum())
        jyy += float((sy * sy).sum())
        jxy += float((sx * sy).sum())
    trace = jxx + jyy
    if trace <= 1e-9:
        return 0.0
    root = ((jxx - jyy) ** 2 + 4 * jxy * jxy) ** 0.5
    return float(root / trace)


def percentiles(gray: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    """``np.percentile(gray, qs)`` (linear interpolation) from a histogram, when ``gray``
    holds quarter grey levels (``downscale`` of whole levels): a count instead of a sort,
    ~0.5 instead of ~1.8 ms at 512 px, and the same numbers."""
    scaled = gray * np.float32(4)
    levels = scaled.astype(np.int32)
    if not gray.size or not np.array_equal(levels, scaled) or levels.min() < 0:
        return [float(v) for v in np.percentile(gray, qs)]
    cumulative = np.cumsum(np.bincount(levels.ravel()))
    out = []
    for q in qs:
        # numpy's default ("linear"): between the order statistics around q/100 * (n-1).
        position = q / 100 * (gray.size - 1)
        below = math.floor(position)
        a, b = np.searchsorted(cumulative, [below, min(below + 1, gray.size - 1)], "right")
        a, b = np.float64(a / 4), np.float64(b / 4)
        t = position - below
        # numpy's lerp, which is exact at both ends.
        out.append(float(b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t))
    return out


def noise_sigma(gray: np.ndarray) -> float:
    """Immerkaer's fast estimate of Gaussian noise (grey levels)."""
    g = gray
    if min(g.shape) < 3:
        return 0.0
    # The 3x3 kernel [1 -2 1; -2 4 -2; 1 -2 1] is the outer product of [1 -2 1] with
    # itself: two 1-D passes instead of nine shifted copies (same sums for whole grey levels).
    across = g[:, :-2] - 2 * g[:, 1:-1] + g[:, 2:]
    conv = across[:-2] - 2 * across[1:-1] + across[2:]
    return float(np.sqrt(np.pi / 2) * np.abs(conv).mean() / 6.0)


# The measurements the keeper head reads, in this order (models/train_default.py writes
# the same list into the head's metadata and the Analyzer checks it).
FEATURE_NAMES = (
    "log_sharpness_subject",
    "log_sharpness_overall",
    "log_sharpness_subject_half",
    "log_sharpness_subject_quarter",
    "log_ratio_full_half",
    "log_ratio_half_quarter",
    "blur_directionality",
    "blur_directionality_half",
    "log_noise",
    "luma_p01",
    "luma_p05",
    "luma_p50",
    "luma_p95",
    "luma_p99",
    "clipped_highlights",
    "crushed_shadows",
    "bright_fraction",
    "dark_fraction",
)


@dataclass(frozen=True)
class Measurements:
    sharpness: Sharpness
    exposure: Exposure
    features: np.ndarray  # float32, FEATURE_NAMES order
    long_side: int  # px of the grey image measured: WORK_SIZE, or the smaller preview's

    @property
    def mixed_scales(self) -> bool:
        """A preview of 512-1023 px is measured at its own size: its "half" scale is the
        frame itself and its "quarter" a half or a third of it, so the scale ratios read as
        no preview the keeper head learnt from does (models/MODELS.md, keeper head).
        Previews of 1024 px and more are halved twice; under 512 px all three scales are
        the frame, as for the head's 481 px training photos."""
        return WORK_SIZE // 2 <= self.long_side < WORK_SIZE

    @property
    def full_scale(self) -> bool:
        """Measured at the full working size (a preview of 1024 px or more: every
        camera's)."""
        return self.long_side >= WORK_SIZE

    @property
    def tonal_range(self) -> float:
        """How far the frame's tones spread: luma p99 - p01, 0..1 of full scale."""
        high = self.features[FEATURE_NAMES.index("luma_p99")]
        low = self.features[FEATURE_NAMES.index("luma_p01")]
        return float(high - low)


def working_gray(image: np.ndarray | Image.Image, long_side: int = WORK_SIZE) -> np.ndarray:
    """Rec. 601 luma with the long side at ``long_side`` px, float32 (Pillow: 3x faster
    than numpy). Never upscaled: an enlarged small photo would read as blurred."""
    picture = as_picture(image)
    w, h = picture.size
    scale = min(1.0, long_side / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    gray = picture.convert("L")
    if gray.size != size:
        gray = gray.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(gray, dtype=np.float32)


def measure_all(image: np.ndarray | Image.Image) -> Measurements:
    """Every technical number for one upright RGB preview, at the fixed working scale."""
    gray = working_gray(image, WORK_SIZE)
    full = sharpness(gray)
    half_gray = downscale(gray, WORK_SIZE // 2)
    half = sharpness(half_gray)
    quarter = sharpness(downscale(half_gray, WORK_SIZE // 4))
    small = half_gray
    p01, p05, p50, p95, p99 = percentiles(small, (1, 5, 50, 95, 99))
    expo = exposure(small, median=float(p50) if max(small.shape) < 1024 else None)
    n = float(small.size) or 1.0

    def log(x: float) -> float:
        return float(np.log10(max(x, 1e-3)))

    features = np.array(
        [
            log(full.subject),
            log(full.overall),
            log(half.subject),
            log(quarter.subject),
            log(full.subject) - log(half.subject),
            log(half.subject) - log(quarter.subject),
            full.anisotropy,
            half.anisotropy,
            log(noise_sigma(gray)),
            p01 / 255.0,
            p05 / 255.0,
            p50 / 255.0,
            p95 / 255.0,
            p99 / 255.0,
            expo.clipped_highlights,
            expo.crushed_shadows,
            float((small >= 235).sum() / n),
            float((small <= 16).sum() / n),
        ],
        dtype=np.float32,
    )
    return Measurements(
        sharpness=full,
        exposure=expo,
        features=features,
        long_side=max(gray.shape),
    )


def exposure(gray: np.ndarray, median: float | None = None) -> Exposure:
    """``median``: the caller's own median of ``gray`` when it has one (saves a sort)."""
    g = downscale(gray, 512)
    n = float(g.size) or 1.0
    return Exposure(
        mean_luminance=float(g.mean()),
        clipped_highlights=float((g >= 250).sum() / n),
        crushed_shadows=float((g <= 5).sum() / n),
        median_luminance=float(np.median(g)) if median is None else median,
    )
