"""Faces and eyes: where the people are, whether their eyes are open, whether the eyes are sharp.

MediaPipe's chain, converted to ONNX (models/MODELS.md): BlazeFace (full and short range) finds
faces, the face mesh places 468 points, and the iris model draws the eyelid contour of each eye.
Eye openness is the iris model's lid gap over the eye width, because the 468-point mesh's eye
aspect ratio barely moves when an eye closes (FACTS.md). Focus is measured inside the eye regions
at the preview's own resolution, resampled to a scale fixed by the eye's width so a 60 px and a
600 px face give comparable numbers.

BlazeFace sees its input at 128 or 192 px, so a 40 px face in a 1620 px preview would be 5 px at
that scale: the frame is also searched in overlapping tiles, and the results are merged with the
same weighted non-maximum suppression MediaPipe uses.

This module only turns pixels into measurements (``Face``); which faces matter and whether a
closed eye is a reason against the frame is decided by the two small functions at the bottom,
so the policy is easy to find and argue about.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from postselectd.analysis.runtime import ModelError, OnnxModel

__all__ = [
    "EYES_CLOSED_BELOW",
    "EYES_CLOSED_PROBABILITY",
    "EYE_LEANS_CLOSED",
    "EYE_SURE_CLOSED",
    "EYE_STATE_MIN_WIDTH_PX",
    "FaceAnalyzer",
    "Face",
    "FaceFocus",
    "Pyramid",
    "eyes_closed_reason",
    "face_focus",
    "join_eyes",
]

# --- thresholds (measured with bench/eval_faces.py; see the numbers there) --------------------

# Mean lid gap / eye width of both eyes below which a face's eyes are closed. Measured with
# bench/eval_faces.py: eval/eyes-face (all closed) median 0.09, p90 0.17, max 0.26;
# eval/faceblur face_sharp (open) min 0.155, p2 0.205, median 0.29. The classes overlap
# around 0.2: 0.20 gives 94% / 2%, 0.21 gives 95% / 5%, 0.18 gives 91% / 1%.
EYES_CLOSED_BELOW = 0.20
# Looking down lowers the upper lid over an open eye: then only a nearly shut lid is a blink.
# Not validated on open-eyed looking-down faces (no such labels yet); costs 2 of 149 eyes-face.
EYES_CLOSED_BELOW_LOOKING_DOWN = 0.14
# With the eye-state model (models/eye_state.onnx): a face's eyes are closed when its
# P(closed) reaches this. Held-out faces (bench/eval_eyes.py --data, model version 2, the
# eyes joined by join_eyes): at 0.8 1 of 1321 open faces is called closed and 0.971 of 171
# closed ones are caught; at 0.5, 4 and 0.982.
EYES_CLOSED_PROBABILITY = 0.8
# A blink closes both eyes, so a face is as closed as its more open eye; but when one eye
# is read surely closed (EYE_SURE_CLOSED) and the other leans closed too (EYE_LEANS_CLOSED),
# the two readings are joined (the mean of their log-odds): the doubtful eye of a closed
# face is the usual miss (a laughing squeeze, lashes under hair or heavy eye shadow; 14 of
# the 21 closed faces of eval/eyes-face not rejected with model version 1). bench/
# eval_eyes.py --data compares the joins on held-out faces; see join_eyes.
EYE_SURE_CLOSED, EYE_LEANS_CLOSED = 0.95, 0.5
# An eye narrower than this (px, corner to corner, in the image it was sampled from) is too
# small to tell open from closed: no verdict (None), never "closed". Held-out eyes read as if
# W px wide: accuracy 0.977 native, 0.981 at 10 px, 0.971 at 8, 0.963 at 6, 0.711 at 4 (open
# eyes read P >= 0.8: 0.6% at 10 px, 0.7% at 8, 1.0% at 6). 8, not 10: 11 of the 27 closed
# faces of eval/eyes-face not caught at 10 had eyes 8-10 px wide (a 40-60 px face).
EYE_STATE_MIN_WIDTH_PX = 8.0
# Eyes of a main subject narrower than this in the preview are read again in the file's
# larger image when it has one (a raw's full-size preview; Preview.detail), decoded at
# DETAIL_SCALE times the preview's long side: a 6000 px JPEG at 1/2 (~32 ms), where a face
# of 40 px in the 1620 px preview is 74 px. Below 12 px the eye-state model starts to lose
# accuracy (bench/eval_eyes.py: 0.989 at 10-20 px, 0.977 at 8, "cannot tell" under 8).
DETAIL_EYES_BELOW_PX = 12.0
DETAIL_SCALE = 1.8
# ... unless the preview already reads them open for sure (P(closed) under this): the closer
# look could only confirm it, and a group of small faces would pay the decode for nothing.
DETAIL_OPEN_BELOW = 0.15
# What the larger image replaces: the eyes' state, not their focus (eye_sharpness is
# calibrated on the preview's own scale).
_EYE_STATE_KEYS = (
    "left_eye_openness",
    "right_eye_openness",
    "eyes_closed",
    "left_eye_closed_probability",
    "right_eye_closed_probability",
    "eyes_closed_probability",
    "eye_width",
)
# The eye crop's side over the eye's width (the iris model's ROI, MediaPipe's 2.3).
EYE_CROP_SCALE = 2.3
# Head pitch (degrees, negative = chin down) from which a face counts as looking down.
LOOKING_DOWN_PITCH = -30.0
# A face is a main subject when it is at least this fraction of the largest face's size...
MAIN_SUBJECT_SIZE = 0.6
# ...or at least this fraction of the frame's short side (a portrait with a bystander).
MAIN_SUBJECT_FRAME = 0.25
# Eye sharpness (see Face.eye_sharpness) from which the eyes are in focus. eval/faceblur (faces
# found): sharp min 0.34, p5 0.41; blurred p95 0.24, max 0.43 (3 of 89 above 0.30).
EYES_SHARP_ABOVE = 0.30

# Side (px) at which the inner face is measured for face_sharpness.
FACE_DETAIL_PX = 48

# --- search ---------------------------------------------------------------------------------

# Tiles are squares of this fraction of the frame's long side, overlapping so that a face cut
# by one tile's edge lies whole inside its neighbour: 8 tiles of 648 px on a 1620x1080 frame,
# each read by the full-range model at 192 px (a 40 px face is 12 px there). Measured: the 3
# faces of eval/portraits/2008_002506 shrunk to 41-49 px and pasted at 5 places in a 1620x1080
# frame: 0.4 finds 15/15, 0.5 (6 tiles, ~7 ms less) 12/15, at 36-44 px 14/15 vs 4/15. The
# short-range model on tiles found at most 14/21 portraits faces >= 40 px (full: 21/21).
# The one-run search reads the frame at the tiles' scale (a 1620x1080 preview at 480x320);
# a coarser scale is cheaper but loses the small faces it is there for: bench/eval_faces.py
# "small faces" finds 246/252 at 0.40, 237/252 at 0.45 and 224/252 at 0.50 (384x256, 40 px
# faces 62 -> 55 of 63), for 4.7 ms of CPU (the search 13.1 -> 8.4 ms a frame); at 0.50
# eval_quality also moves two eyes verdicts (DSC_0111 loses "eyes closed", blur-0014
# gains it), as the mesh then starts from other boxes.
TILE_FRACTION = 0.40
TILE_OVERLAP = 0.30
# Whole-frame passes read a copy of at least this long side (the models see 128-192 px).
WHOLE_FRAME_PX = 384
# Tiling is only worth it when faces this small (px) could be missed by the whole-frame pass.
MIN_FACE_PX = 40
# Detections scoring below this are dropped; the mesh's face flag then confirms each face.
MIN_DETECTION_SCORE = 0.5
MIN_FACE_FLAG = 0.5
WHOLE_FRAME_MIN_SCORE = 0.3
# The one-run search (an any-size model) sees each face once where overlapping tiles saw
# it up to four times at different offsets, so it keeps weaker candidates; the mesh's face
# flag still confirms each. eval/portraits x0.5 in a 1620x1080 frame: a face the tiles
# scored 0.33-0.62 scores 0.39 in the one run.
SEARCH_MIN_SCORE = 0.35
NMS_IOU = 0.3
# Most faces meshed per frame (highest detection scores first): bounds the time for crowds.
MAX_FACES = 24

# Face-mesh indices of the eye corners: (temporal, nasal) for the eye on the image left,
# (nasal, temporal) for the eye on the image right.
_IMAGE_LEFT_EYE = (33, 133)
_IMAGE_RIGHT_EYE = (362, 263)
_FOREHEAD, _CHIN, _NOSE_TIP = 10, 152, 1
_CHEEK_LEFT, _CHEEK_RIGHT = 234, 454


@dataclass(frozen=True)
class Face:
    """One face, in the pixels of the image given to ``FaceAnalyzer.analyze``."""

    box: tuple[float, float, float, float]  # x, y, w, h
    score: float  # detector confidence, 0..1
    size: float  # px: the face's width (ear to ear scale), what "a 40 px face" means
    # Subject's eyes as the photographer sees them: "left" = the eye on the image left.
    # Eyes are measured on main subjects only (None elsewhere): a bystander's blink is no
    # reason, and two iris runs per face add up in a crowd.
    left_eye_openness: float | None  # lid gap / eye width: ~0.3 open, < 0.15 closed
    right_eye_openness: float | None
    eyes_closed: bool
    # Edge crispness in the eye regions at the image's own resolution (see _detail): >= 0.3 sharp
    # (eval/faceblur sharp p5 0.41), blurred mostly < 0.25; comparable between small and large
    # faces and across lighting; an upscaled preview reads soft (~0.1-0.3 at 2.7x).
    eye_sharpness: float | None
    # The same measure over the inner face (brows to mouth) resampled to 48 px: blur at the
    # face's own scale, whatever the preview's scaling.
    face_sharpness: float
    yaw: float  # degrees, 0 = facing the camera
    pitch: float  # degrees, negative = chin down
    looking_down: bool  # pitch <= LOOKING_DOWN_PITCH (on main subjects)
    is_main_subject: bool
    # The learned eye-state model (models/eye_state.onnx) on the same crops the iris model
    # reads: P(closed) per eye, None when the eye is narrower than EYE_STATE_MIN_WIDTH_PX
    # in the image ("cannot tell"), when the eyes were not measured, or without the model.
    left_eye_closed_probability: float | None = None
    right_eye_closed_probability: float | None = None
    # The face's P(closed): the smaller of its two eyes', None unless both can be told.
    eyes_closed_probability: float | None = None
    # Mean eye width (corner to corner) in px of the image the eyes were read from (the
    # preview, or the file's larger image: DETAIL_EYES_BELOW_PX): how much there was to see.
    eye_width: float | None = None
    # The eyes' state was read in the file's larger image (too small in the preview).
    eyes_read_closer: bool = False


@dataclass(frozen=True)
class FaceFocus:
    """What the caller needs to decide "out of focus" for a photo with people in it."""

    faces: int  # faces found
    main_subjects: int
    eye_sharpness: float  # sharpest main subject's eyes (0 when there is no face)
    face_sharpness: float
    eyes_sharp: bool  # the sharpest main subject's eyes reach EYES_SHARP_ABOVE


@dataclass(frozen=True)
class _Detection:
    box: np.ndarray  # x0, y0, x1, y1 in image px
    keypoints: np.ndarray  # 6 x 2 in image px
    score: float


def _anchors(spec: dict) -> np.ndarray:
    """MediaPipe SsdAnchorsCalculator with fixed anchor size: anchor centers (N, 2) in 0..1."""
    strides = list(spec["strides"])
    height, width = int(spec["input_size_height"]), int(spec["input_size_width"])
    ox, oy = float(spec["anchor_offset_x"]), float(spec["anchor_offset_y"])
    per_layer = 2 if float(spec["interpolated_scale_aspect_ratio"]) == 1.0 else 1
    centers: list[tuple[float, float]] = []
    layer = 0
    while layer < len(strides):
        last = layer
        while last < len(strides) and strides[last] == strides[layer]:
            last += 1
        repeats = per_layer * (last - layer)
        fh = math.ceil(height / strides[layer])
        fw = math.ceil(width / strides[layer])
        for y in range(fh):
            for x in range(fw):
                centers.extend([((x + ox) / fw, (y + oy) / fh)] * repeats)
        layer = last
    anchors = np.asarray(centers, dtype=np.float32)
    if "num_anchors" in spec and len(anchors) != int(spec["num_anchors"]):
        raise ModelError(
            f"anchor spec gives {len(anchors)} anchors, expected {spec['num_anchors']}"
        )
    return anchors


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def _weighted_nms(
    boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, iou: float
) -> list[_Detection]:
    """MediaPipe's weighted NMS: overlapping boxes are averaged by score, not discarded."""
    order = np.argsort(-scores)
    remaining = order
    out: list[_Detection] = []
    while remaining.size:
        best = remaining[0]
        overlaps = _iou(boxes[best], boxes[remaining])
        group = remaining[overlaps > iou]
        if group.size == 0:
            group = remaining[:1]
        weights = scores[group][:, None]
        total = float(weights.sum())
        out.append(
            _Detection(
                box=(boxes[group] * weights).sum(0) / total,
                keypoints=(keypoints[group] * weights[:, :, None]).sum(0) / total,
                score=float(scores[best]),
            )
        )
        remaining = remaining[overlaps <= iou]
        remaining = remaining[remaining != best]
    return out


class _BlazeFace:
    """One BlazeFace model: letterboxes a region of the image and decodes per its metadata."""

    def __init__(self, model: OnnxModel):
        self.model = model
        try:
            self.anchor_spec = json.loads(model.metadata["postselectd.anchors"])
            self.anchors = _anchors(self.anchor_spec)
            decode = json.loads(model.metadata["postselectd.decode"])
        except (KeyError, ValueError) as exc:
            raise ModelError(
                f"{model.path}: anchors/decoding metadata unreadable ({exc})"
            ) from None
        self.box_scale = float(decode.get("box_scale", model.contract.width))
        self.min_score = max(MIN_DETECTION_SCORE, float(decode.get("min_score", 0.5)))
        self.size = model.contract.width
        self._anchor_cache: dict[tuple[int, int], np.ndarray] = {}
        # A model exported for any input size (models/quantize.py) reads a whole frame at
        # once; its input must be a multiple of the network's largest stride.
        shape = model.session.get_inputs()[0].shape
        self.any_size = not all(isinstance(d, int) for d in shape[2:])
        self.multiple = int(model.metadata.get("postselectd.input_multiple", 32))

    def detect(
        self,
        image: Image.Image,
        region: tuple[int, int, int, int],
        min_score: float | None = None,
        factor: float = 1.0,
        scale: float | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Faces inside ``region`` (x0, y0, x1, y1; may extend past the image, padded black).

        ``image`` may be a reduced copy of the photo, ``factor`` times smaller. Without
        ``scale`` the region is letterboxed into the model's square; with it (a model that
        takes any input size) the region is read at that scale onto a canvas padded to a
        multiple of the network's stride, in one run. Returns boxes (N, 4) and keypoints
        (N, 6, 2) in the photo's px and scores (N,), before NMS.
        """
        x0, y0, x1, y1 = region
        width, height = x1 - x0, y1 - y0
        if scale is None:
            scale = self.size / max(width, height)
            new_w = max(1, round(width * scale))
            new_h = max(1, round(height * scale))
            canvas_w = canvas_h = self.size
        else:
            new_w = max(1, round(width * scale))
            new_h = max(1, round(height * scale))
            canvas_w, canvas_h = _round_up(new_w, self.multiple), _round_up(new_h, self.multiple)
        crop = image.crop(region) if region != (0, 0, *image.size) else image
        resized = crop.resize((new_w, new_h), Image.Resampling.BILINEAR)
        pad_x, pad_y = (canvas_w - new_w) // 2, (canvas_h - new_h) // 2
        c = self.model.contract
        canvas = np.full((3, canvas_h, canvas_w), -c.mean / c.std, dtype=np.float32)
        pixels = np.asarray(resized, dtype=np.float32).transpose(2, 0, 1)
        canvas[:, pad_y : pad_y + new_h, pad_x : pad_x + new_w] = (pixels - c.mean) / c.std
        outputs = self.model.run(canvas[None])
        logits = np.clip(outputs["classificators"][0, :, 0], -80, 80)
        scores = 1.0 / (1.0 + np.exp(-logits))
        keep = scores > (self.min_score if min_score is None else min_score)
        if not keep.any():
            return np.zeros((0, 4)), np.zeros((0, 6, 2)), np.zeros((0,))
        # Regressors are in the model's input px (box_scale = its trained side); anchors too.
        raw = outputs["regressors"][0, keep].astype(np.float64) * (self.size / self.box_scale)
        anchors = self._anchor_px(canvas_w, canvas_h)[keep]
        cx, cy = raw[:, 0] + anchors[:, 0], raw[:, 1] + anchors[:, 1]
        w, h = raw[:, 2], raw[:, 3]
        points = raw[:, 4:16].reshape(-1, 6, 2) + anchors[:, None, :]
        valid = (w > 0) & (h > 0)
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)

        # canvas px -> image px.
        def to_image(px: np.ndarray, py: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return (
                (x0 + (px - pad_x) / scale) * factor,
                (y0 + (py - pad_y) / scale) * factor,
            )

        bx0, by0 = to_image(boxes[:, 0], boxes[:, 1])
        bx1, by1 = to_image(boxes[:, 2], boxes[:, 3])
        kx, ky = to_image(points[..., 0], points[..., 1])
        return (
            np.stack([bx0, by0, bx1, by1], axis=1)[valid],
            np.stack([kx, ky], axis=-1)[valid],
            scores[keep][valid],
        )

    def _anchor_px(self, width: int, height: int) -> np.ndarray:
        """Anchor centers in px of a ``width`` x ``height`` input (cached per size)."""
        if (width, height) not in self._anchor_cache:
            if (width, height) == (self.size, self.size):
                anchors = self.anchors
            else:
                spec = dict(self.anchor_spec, input_size_width=width, input_size_height=height)
                spec.pop("num_anchors", None)
                anchors = _anchors(spec)
            self._anchor_cache[(width, height)] = anchors * np.array([width, height])
        return self._anchor_cache[(width, height)]


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _roi_sampler(
    center: np.ndarray, angle: float, side: float, out: int, flip: bool = False
) -> tuple[tuple[float, ...], np.ndarray]:
    """An ``out`` x ``out`` crop of a square ROI rotated by ``angle`` (radians).

    Returns PIL's inverse-affine coefficients (output px -> image px) and the same map as a
    3x3 matrix to bring model outputs back. ``flip`` mirrors the crop horizontally, as the iris
    model wants for the eye on the image right.
    """
    cos, sin = math.cos(angle), math.sin(angle)
    s = side / out
    sx = -s if flip else s
    # image = center + R @ ((u - out/2) * sx, (v - out/2) * s)
    a, b = cos * sx, -sin * s
    d, e = sin * sx, cos * s
    c = center[0] - (a + b) * out / 2
    f = center[1] - (d + e) * out / 2
    matrix = np.array([[a, b, c], [d, e, f], [0.0, 0.0, 1.0]])
    return (a, b, c, d, e, f), matrix


def _sample(
    pyramid: Pyramid, center: np.ndarray, angle: float, side: float, out: int, flip: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """An ``out`` px square crop of a rotated ROI (photo px), read from the pyramid level that
    keeps it at or above ``out`` px so large faces are not aliased; plus the crop -> photo map."""
    image, factor = pyramid.for_roi(side, out)
    coeffs, _ = _roi_sampler(center / factor, angle, side / factor, out, flip)
    _, matrix = _roi_sampler(center, angle, side, out, flip)
    crop = image.transform((out, out), Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR)
    return np.asarray(crop), matrix


def _to_image(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:2, :2].T + matrix[:2, 2]


def _luma(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.float32)
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def _detail(gray: np.ndarray) -> float:
    """Laplacian variance over gradient energy, at the preview's own pixels.

    Plain Laplacian variance grows with contrast and, for the same sharp face, with how small
    the face is (more edges per pixel). The ratio of second to first derivative energy is about
    1 / (edge width in px)^2: it asks how crisp the edges are at full resolution, whatever their
    number or contrast, so a 60 px and a 600 px face are comparable, and an upscaled (soft)
    preview reads as soft. The +25 keeps flat, noisy patches from dividing by nearly zero.
    An earlier variant without the edge mask stayed within ~0.5-1.5 on eval/portraits faces
    downscaled 1x to 0.25x, and fell 0.28 -> 0.07 -> 0.02 on a sharp face upscaled 1x, 2x, 4x.
    """
    g = gray.astype(np.float32)
    if min(g.shape) < 3:
        return 0.0
    lap = g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:] - 4.0 * g[1:-1, 1:-1]
    gx = (g[1:-1, 2:] - g[1:-1, :-2]) / 2
    gy = (g[2:, 1:-1] - g[:-2, 1:-1]) / 2
    energy = gx * gx + gy * gy
    # Only the edges (top quarter of gradient energy): on smooth skin the ratio would measure
    # JPEG noise, which is "sharp" even in an upscaled, soft preview.
    edges = energy >= np.quantile(energy, 0.75)
    return float((lap[edges] ** 2).mean() / (energy[edges].mean() + 25.0))


def _native_patch(
    picture: Image.Image, center: np.ndarray, half: tuple[float, float]
) -> np.ndarray:
    """Luma of an axis-aligned box around ``center`` at the picture's own resolution."""
    box = (
        math.floor(center[0] - half[0]),
        math.floor(center[1] - half[1]),
        math.ceil(center[0] + half[0]),
        math.ceil(center[1] + half[1]),
    )
    return _luma(np.asarray(picture.crop(box)))


_UNMEASURED_EYES = {
    "left_eye_openness": None,
    "right_eye_openness": None,
    "eyes_closed": False,
    "eye_sharpness": None,
    "looking_down": False,
}


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


class Pyramid:
    """The photo and its halvings (box filter): detectors and crops read the smallest copy
    that still has the detail they need, which is faster and avoids aliasing."""

    def __init__(self, picture: Image.Image) -> None:
        self.levels: list[tuple[Image.Image, float]] = [(picture, 1.0)]
        while max(self.levels[-1][0].size) >= 2 * WHOLE_FRAME_PX:
            image, factor = self.levels[-1]
            self.levels.append((image.reduce(2), factor * 2))

    def at_least(self, long_side: float) -> tuple[Image.Image, float]:
        """The smallest copy whose long side is at least ``long_side`` of the photo's."""
        base = max(self.levels[0][0].size)
        best = self.levels[0]
        for image, factor in self.levels:
            if base / factor >= long_side:
                best = (image, factor)
        return best

    def at_most(self, long_side: float) -> tuple[Image.Image, float]:
        """The copy closest to ``long_side`` from above (whole-frame passes)."""
        return self.at_least(long_side)

    def for_roi(self, side: float, out: int) -> tuple[Image.Image, float]:
        """The copy in which a ``side`` px ROI is still at least ``out`` px."""
        best = self.levels[0]
        for image, factor in self.levels:
            if side / factor >= out:
                best = (image, factor)
        return best


class _Closer:
    """The larger image of a frame (``FaceAnalyzer.analyze``'s ``detail``), decoded on first
    use at DETAIL_SCALE times the preview's long side."""

    def __init__(self, image: Image.Image, detail: Callable[[float], Image.Image | None] | None):
        self._image, self._detail = image, detail

    @functools.cached_property
    def view(self) -> tuple[Pyramid, float] | None:
        """Its pyramid and its scale to the preview; None when there is none, it cannot be
        read, or it is not the same frame (another aspect ratio) or not larger."""
        if self._detail is None:
            return None
        width, height = self._image.size
        picture = self._detail(DETAIL_SCALE * max(width, height))
        if picture is None:
            return None
        scale = picture.width / width
        if scale < DETAIL_SCALE * 0.75 or abs(picture.height / height - scale) > 0.02 * scale:
            return None
        return Pyramid(picture), scale


class FaceAnalyzer:
    """The four face sessions; ``analyze(image)`` finds faces and measures their eyes."""

    def __init__(
        self, models_dir: Path, threads: int = 1, providers: list[str] | None = None
    ) -> None:
        directory = Path(models_dir)
        self.full = _BlazeFace(
            OnnxModel(directory / "face_detection_full.onnx", threads, providers)
        )
        self.short = _BlazeFace(
            OnnxModel(directory / "face_detection_short.onnx", threads, providers)
        )
        # The full-range model freed of its fixed input size (models/quantize.py): the
        # small-face search in one run instead of overlapping tiles. Optional, so a models
        # folder without it (POSTSELECTD_MODELS) still works, with tiles.
        search = directory / "face_detection_full_anysize.onnx"
        self.search = (
            _BlazeFace(OnnxModel(search, threads, providers)) if search.is_file() else None
        )
        self.mesh = OnnxModel(directory / "face_landmark.onnx", threads, providers)
        self.iris = OnnxModel(directory / "iris_landmark.onnx", threads, providers)
        try:
            contour = json.loads(self.iris.metadata["postselectd.eye_contour"])
            self.lid_pairs = np.asarray(contour["lid_pairs_upper_lower"], dtype=int)
            self.corners = (int(contour["corner_temporal"]), int(contour["corner_nasal"]))
        except (KeyError, ValueError) as exc:
            raise ModelError(f"{self.iris.path}: eye contour metadata unreadable ({exc})") from None
        self.mesh_scale = float(self.mesh.metadata.get("postselectd.landmark_scale", 192))
        self.iris_scale = float(self.iris.metadata.get("postselectd.landmark_scale", 64))
        # The learned eye-state model reads the iris model's crops. Optional, so a models
        # folder without it (POSTSELECTD_MODELS) still works, with the geometric rule.
        eye_state = directory / "eye_state.onnx"
        self.eye_state = (
            OnnxModel(eye_state, threads, providers, outputs=("closed_probability",))
            if eye_state.is_file()
            else None
        )
        if self.eye_state is not None and (
            self.eye_state.contract.width,
            self.eye_state.contract.height,
        ) != (self.iris.contract.width, self.iris.contract.height):
            raise ModelError(f"{eye_state}: input size differs from the iris model's crop")

    # -- detection ---------------------------------------------------------------------------

    def detect(self, pyramid: Pyramid) -> list[_Detection]:
        """Whole frame (big and tight faces), then the small-face search (or tiles)."""
        small, factor = pyramid.at_most(WHOLE_FRAME_PX)
        width, height = small.size
        whole = (0, 0, width, height)
        # A head shot whose face spills over the frame: give the short-range model a margin.
        margin = max(width, height) // 4
        padded = (-margin, -margin, width + margin, height + margin)
        full_width, full_height = pyramid.levels[0][0].size
        tiles = self._tiles(full_width, full_height)
        one_run = bool(tiles) and self.search is not None and self.search.any_size
        # The whole-frame passes yield few candidates, so they may be generous (blurred faces
        # score 0.3-0.5); the mesh's face flag then confirms each one.
        found = [
            self.short.detect(small, whole, WHOLE_FRAME_MIN_SCORE, factor),
            self.short.detect(small, padded, WHOLE_FRAME_MIN_SCORE, factor),
        ]
        if not one_run:
            # The one-run search below reads the whole frame with the same full-range model
            # at 2.5x this pass's scale, and the short-range passes take the faces too big
            # for it: without the search, this pass is needed. (Measured with the search:
            # bench/eval_quality.py and eval_faces.py give the same results without this
            # pass; it cost ~4.5 ms of every frame.)
            found.append(self.full.detect(small, whole, factor=factor))
        if tiles:
            # Small faces: the full-range model at the tiles' scale (a tile of
            # TILE_FRACTION of the long side seen at 192 px), read from the pyramid level
            # that still has at least that resolution.
            tile_px = tiles[0][2] - tiles[0][0]
            model = self.search if one_run else self.full
            scale = model.size / tile_px
            source, factor = pyramid.at_least(scale * max(full_width, full_height))
            if one_run:
                # One run over the whole frame: same scale, no overlap to pay twice, no tile
                # borders; ~half the work of the tiles (a 480x320 input for any frame).
                whole_source = (0, 0, *source.size)
                found.append(
                    model.detect(source, whole_source, SEARCH_MIN_SCORE, factor, scale * factor)
                )
            else:
                for x0, y0, x1, y1 in tiles:
                    region = (
                        round(x0 / factor),
                        round(y0 / factor),
                        round(x1 / factor),
                        round(y1 / factor),
                    )
                    found.append(model.detect(source, region, factor=factor))
        boxes = np.concatenate([f[0] for f in found])
        if not len(boxes):
            return []
        keypoints = np.concatenate([f[1] for f in found])
        scores = np.concatenate([f[2] for f in found])
        return _weighted_nms(boxes, keypoints, scores, NMS_IOU)

    @staticmethod
    def _tiles(width: int, height: int) -> list[tuple[int, int, int, int]]:
        long_side = max(width, height)
        tile = max(1, round(long_side * TILE_FRACTION))
        # The whole-frame pass already sees faces this big relative to the frame.
        if tile >= long_side or MIN_FACE_PX / long_side > 0.12:
            return []
        step = max(1, round(tile * (1 - TILE_OVERLAP)))

        def starts(extent: int) -> list[int]:
            if extent <= tile:
                return [(extent - tile) // 2]
            count = math.ceil((extent - tile) / step) + 1
            return [round(i * (extent - tile) / (count - 1)) for i in range(count)]

        return [(x, y, x + tile, y + tile) for y in starts(height) for x in starts(width)]

    # -- per face ----------------------------------------------------------------------------

    def analyze(
        self,
        image: np.ndarray | Image.Image,
        timings: list[tuple[str, float]] | None = None,
        pyramid: Pyramid | None = None,
        detail: Callable[[float], Image.Image | None] | None = None,
    ) -> tuple[Face, ...]:
        """All faces in an upright RGB image (Pillow, or H x W x 3 uint8), largest first.

        ``timings``: if given, gets the ms of each step (faces.detect, faces.mesh,
        faces.eyes) appended, for the benchmarks. ``pyramid``: the image's ``Pyramid``, when
        the caller made it (the Analyzer shares it with the backbone). ``detail``: a larger
        image of the same frame (see ``Analyzer.analyze``), decoded only when a main
        subject's eyes are narrower than DETAIL_EYES_BELOW_PX here: their state is then read
        there, at the resolution the camera recorded (their focus stays this image's).
        """
        if isinstance(image, np.ndarray):
            if image.ndim != 3 or image.shape[2] != 3:
                return ()
            image = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
        if image.mode != "RGB" or min(image.size) < 16:
            return ()
        clock = {"faces.detect": 0.0, "faces.mesh": 0.0, "faces.eyes": 0.0}
        start = time.perf_counter()
        if pyramid is None or pyramid.levels[0][0] is not image:
            pyramid = Pyramid(image)
        detections = self.detect(pyramid)
        clock["faces.detect"] = time.perf_counter() - start
        start = time.perf_counter()
        meshed: list[dict] = []
        for detection in sorted(detections, key=lambda d: -d.score):
            if len(meshed) >= MAX_FACES:
                break
            # A face already meshed from another tile or model: do not pay for it twice.
            cx, cy = (detection.box[:2] + detection.box[2:]) / 2
            if any(
                m["box"][0] <= cx <= m["box"][0] + m["box"][2]
                and m["box"][1] <= cy <= m["box"][1] + m["box"][3]
                for m in meshed
            ):
                continue
            face = self._mesh(pyramid, detection)
            if face is not None:
                meshed.append(face)
        clock["faces.mesh"] = time.perf_counter() - start
        start = time.perf_counter()
        if not meshed:
            _report(timings, clock)
            return ()
        largest = max(m["size"] for m in meshed)
        short_side = min(image.size)
        closer = _Closer(image, detail)
        faces = []
        for m in sorted(meshed, key=lambda m: -m["size"]):
            main = m["size"] >= MAIN_SUBJECT_SIZE * largest or m["size"] >= (
                MAIN_SUBJECT_FRAME * short_side
            )
            mesh = m.pop("mesh")
            # Eyes (two iris runs) only where they can become a reason: the main subjects.
            eyes = self._eyes(pyramid, mesh, m["pitch"]) if main else _UNMEASURED_EYES
            told = eyes.get("eyes_closed_probability")
            if (
                main
                and (eyes["eye_width"] or 0) < DETAIL_EYES_BELOW_PX
                and (told is None or told >= DETAIL_OPEN_BELOW)
                and closer.view is not None
            ):
                # Too few pixels here to tell the eyes: read them where the camera kept more.
                # The mesh placed in this image, scaled, frames them there.
                larger, scale = closer.view
                close = self._eyes(larger, mesh * scale, m["pitch"])
                eyes.update({key: close[key] for key in _EYE_STATE_KEYS})
                eyes["eyes_read_closer"] = True
            faces.append(Face(is_main_subject=main, **m, **eyes))
        clock["faces.eyes"] = time.perf_counter() - start
        _report(timings, clock)
        return tuple(faces)

    def _mesh(self, pyramid: Pyramid, det: _Detection) -> dict | None:
        """Face mesh for one detection: box, size, pose, face detail; None if no face."""
        eye_l, eye_r = det.keypoints[0], det.keypoints[1]
        angle = math.atan2(eye_r[1] - eye_l[1], eye_r[0] - eye_l[0])
        center = (det.box[:2] + det.box[2:]) / 2
        side = float(max(det.box[2] - det.box[0], det.box[3] - det.box[1])) * 1.5
        if side < 8:
            return None
        size = self.mesh.contract.width
        crop, matrix = _sample(pyramid, center, angle, side, size)
        c = self.mesh.contract
        tensor = ((np.asarray(crop, dtype=np.float32) - c.mean) / c.std).transpose(2, 0, 1)
        out = self.mesh.run(np.ascontiguousarray(tensor)[None])
        flag = 1.0 / (1.0 + math.exp(-float(np.clip(out["face_flag"].ravel()[0], -80, 80))))
        if flag < MIN_FACE_FLAG:
            return None
        local = out["landmarks"].reshape(-1, 3).astype(np.float64)
        mesh = _to_image(matrix, local[:, :2] * (size / self.mesh_scale))
        depth = local[:, 2] * (side / self.mesh_scale)
        # Box and size from the mesh: consistent whichever detector or tile found the face.
        x0, y0 = mesh.min(0)
        x1, y1 = mesh.max(0)
        face_width = float(np.linalg.norm(mesh[_CHEEK_RIGHT] - mesh[_CHEEK_LEFT]))
        yaw, pitch = _head_pose(mesh, depth)
        return {
            "box": (float(x0), float(y0), float(x1 - x0), float(y1 - y0)),
            "score": round(det.score, 4),
            "size": round(max(face_width, float(x1 - x0)), 1),
            "face_sharpness": round(self._face_detail(pyramid.levels[0][0], mesh), 3),
            "yaw": round(yaw, 1),
            "pitch": round(pitch, 1),
            "mesh": mesh,
        }

    def _eyes(self, pyramid: Pyramid, mesh: np.ndarray, pitch: float) -> dict:
        crops, widths, inside, openness, sharpness = [], [], [], [], []
        picture_width, picture_height = pyramid.levels[0][0].size
        for corners, flip in ((_IMAGE_LEFT_EYE, False), (_IMAGE_RIGHT_EYE, True)):
            crop, width, center, _ = self._eye_crop(
                pyramid, mesh[corners[0]], mesh[corners[1]], flip
            )
            crops.append(crop)
            widths.append(width)
            # An eye the mesh placed outside the picture (a face cut by the frame) is
            # padding, not an eye: neither reader measures it (a bouquet portrait cut at
            # the lips read P 0.94 "closed").
            inside.append(0 <= center[0] < picture_width and 0 <= center[1] < picture_height)
            openness.append(self._openness(crop) if inside[-1] else None)
            # Sharpness inside the eye's box (the crop's middle: eye width is 1/2.3 of it).
            half = (max(width * 0.6, 3.0), max(width * 0.35, 2.0))
            sharpness.append(_detail(_native_patch(pyramid.levels[0][0], center, half)))
        looking_down = pitch <= LOOKING_DOWN_PITCH
        per_eye = [
            p if seen else None
            for p, seen in zip(self._closed_probabilities(crops, widths), inside, strict=True)
        ]
        # One eye alone (the other too small to tell, or outside the frame) is no evidence.
        probability = None if None in per_eye else join_eyes(per_eye[0], per_eye[1])
        if self.eye_state is not None:
            # Only confident evidence on an eye big enough to judge is a blink.
            closed = probability is not None and probability >= EYES_CLOSED_PROBABILITY
        else:
            limit = EYES_CLOSED_BELOW_LOOKING_DOWN if looking_down else EYES_CLOSED_BELOW
            # The mean of both eyes: one eye alone can be misread (hair, a turned head);
            # max() would miss a third of half-shut blinks, min() flags squints.
            closed = None not in openness and (openness[0] + openness[1]) / 2 < limit
        return {
            "left_eye_openness": _round(openness[0]),
            "right_eye_openness": _round(openness[1]),
            "eyes_closed": bool(closed),
            "eye_sharpness": round(float(np.mean(sharpness)), 3),
            "looking_down": bool(looking_down),
            "left_eye_closed_probability": _round(per_eye[0]),
            "right_eye_closed_probability": _round(per_eye[1]),
            "eyes_closed_probability": _round(probability),
            "eye_width": round(float(np.mean(widths)), 1),
        }

    def _eye_crop(
        self, pyramid: Pyramid, corner_a: np.ndarray, corner_b: np.ndarray, flip: bool
    ) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
        """The iris model's input crop of one eye (64 x 64 RGB uint8), the eye's width in
        image px, its centre and the crop -> image map; corners in image order (left, right).

        Rotated so the corners are level, the eye's width spanning 1/2.3 of the crop, the
        eye on the image right mirrored: both the iris and the eye-state model read it.
        """
        angle = math.atan2(corner_b[1] - corner_a[1], corner_b[0] - corner_a[0])
        width = float(np.linalg.norm(corner_b - corner_a))
        center = (corner_a + corner_b) / 2
        size = self.iris.contract.width
        crop, matrix = _sample(pyramid, center, angle, max(width, 1.0) * EYE_CROP_SCALE, size, flip)
        return crop, width, center, matrix

    def _eye_contour(self, crop: np.ndarray) -> np.ndarray:
        """The iris model's eye contour points (N x 2) in the crop's px."""
        size = self.iris.contract.width
        c = self.iris.contract
        tensor = ((crop.astype(np.float32) - c.mean) / c.std).transpose(2, 0, 1)
        out = self.iris.run(np.ascontiguousarray(tensor)[None])
        return out["eye_contour"].reshape(-1, 3)[:, :2] * (size / self.iris_scale)

    def _openness(self, crop: np.ndarray) -> float:
        """Lid gap over eye width from the iris model's eyelid contour."""
        contour = self._eye_contour(crop)
        temporal, nasal = contour[self.corners[0]], contour[self.corners[1]]
        eye_width = float(np.linalg.norm(nasal - temporal))
        gaps = contour[self.lid_pairs[:, 1], 1] - contour[self.lid_pairs[:, 0], 1]
        return float(np.clip(gaps[2:5].mean(), 0, None) / max(eye_width, 1e-6))

    def _closed_probabilities(
        self, crops: Sequence[np.ndarray], widths: Sequence[float]
    ) -> list[float | None]:
        """P(closed) of each crop by the eye-state model, in one run; None for an eye
        narrower than EYE_STATE_MIN_WIDTH_PX (too few pixels to tell) or without the model."""
        if self.eye_state is None:
            return [None] * len(crops)
        probabilities = self.closed_probability(np.stack(crops))
        return [
            float(p) if w >= EYE_STATE_MIN_WIDTH_PX else None
            for p, w in zip(probabilities, widths, strict=True)
        ]

    def closed_probability(self, crops: np.ndarray) -> np.ndarray:
        """P(closed) for a batch of eye crops (N x 64 x 64 x 3 uint8, framed as _eye_crop)."""
        if self.eye_state is None:
            raise ModelError("no eye-state model (models/eye_state.onnx) is loaded")
        c = self.eye_state.contract
        tensor = ((crops.astype(np.float32) - c.mean) / c.std).transpose(0, 3, 1, 2)
        out = self.eye_state.run(np.ascontiguousarray(tensor))
        return out["closed_probability"].reshape(-1)

    def eye_samples(self, image: Image.Image) -> list[tuple[float, list[tuple[np.ndarray, float]]]]:
        """Each meshed face's size and its two eye crops with their widths (largest face
        first): what the eye-state model reads, for building its training data and benches."""
        pyramid = Pyramid(image)
        out = []
        for detection in sorted(self.detect(pyramid), key=lambda d: -d.score)[:MAX_FACES]:
            face = self._mesh(pyramid, detection)
            if face is None:
                continue
            mesh = face["mesh"]
            eyes = []
            for corners, flip in ((_IMAGE_LEFT_EYE, False), (_IMAGE_RIGHT_EYE, True)):
                crop, width, *_ = self._eye_crop(pyramid, mesh[corners[0]], mesh[corners[1]], flip)
                eyes.append((crop, width))
            out.append((face["size"], eyes))
        return sorted(out, key=lambda item: -item[0])

    def eye_patch_crops(
        self, eye: np.ndarray, on_eye_corners: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """A single-eye crop (H x W x 3 uint8, as eye-crop sets have them) framed as the face
        chain frames an eye, as it is and mirrored (which eye it is is unknown).

        The patch is padded (black) so the eye spans 1/2.3 of the crop, assuming the eye
        fills ~70% of the patch's width (how the training patches are framed). With
        ``on_eye_corners`` that first crop is only a guess: the iris model finds the eye's
        corners in it and the eye is framed again on them, as the face chain frames an eye
        on the mesh's corners. Patches differ in how much brow and cheek they hold, and
        the eye-state model reads an eye framed 1.3x too wide or too narrow worse.
        """
        picture = Image.fromarray(np.ascontiguousarray(eye, dtype=np.uint8))
        pyramid = Pyramid(picture)
        width = picture.size[0] * 0.7
        center = np.array(picture.size, dtype=np.float64) / 2
        left = center - (width / 2, 0)
        right = center + (width / 2, 0)
        crops = []
        for flip in (False, True):
            if on_eye_corners:
                left_corner, right_corner = self._iris_corners(pyramid, left, right, flip)
                crops.append(self._eye_crop(pyramid, left_corner, right_corner, flip)[0])
            else:
                crops.append(self._eye_crop(pyramid, left, right, flip)[0])
        return crops[0], crops[1]

    def _iris_corners(
        self, pyramid: Pyramid, corner_a: np.ndarray, corner_b: np.ndarray, flip: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """The eye's corners (image px, in image order) where the iris model places them in
        the crop framed on ``corner_a`` and ``corner_b``."""
        crop, _, _, matrix = self._eye_crop(pyramid, corner_a, corner_b, flip)
        points = _to_image(matrix, self._eye_contour(crop)[[self.corners[0], self.corners[1]]])
        along = (corner_b - corner_a) / max(float(np.linalg.norm(corner_b - corner_a)), 1e-6)
        first, second = sorted(points, key=lambda point: float(point @ along))
        return first, second

    def eye_crop_openness(self, eye: np.ndarray) -> float:
        """Openness of a single-eye crop, for evaluation on eye-crop sets (mean of the crop
        and its mirror, see eye_patch_crops)."""
        plain, mirrored = self.eye_patch_crops(eye)
        return (self._openness(plain) + self._openness(mirrored)) / 2

    def eye_crop_closed_probability(self, eye: np.ndarray) -> float:
        """The eye-state model's P(closed) of a single-eye crop (mean of it and its mirror),
        framed on the eye's own corners (eye_patch_crops)."""
        crops = self.eye_patch_crops(eye, on_eye_corners=True)
        return float(self.closed_probability(np.stack(crops)).mean())

    @staticmethod
    def _face_detail(picture: Image.Image, mesh: np.ndarray) -> float:
        """Detail of the inner face (brows to mouth) brought to 48 px: blur at the face's scale.

        The complement of the eye measure: it ignores how the preview was scaled (an upscaled
        but well-focused face reads as sharp here and soft at the eyes) and sees heavy defocus
        or motion blur across the face, also when the eyes are hidden by glasses or hair.
        """
        eyes = (mesh[33] + mesh[263]) / 2
        center = (eyes + mesh[13]) / 2
        half = max(float(np.linalg.norm(mesh[263] - mesh[33])) * 0.55, 4.0)
        width, height = picture.size
        box = (
            max(0.0, center[0] - half),
            max(0.0, center[1] - half),
            min(float(width), center[0] + half),
            min(float(height), center[1] + half),
        )
        if box[2] - box[0] < 2 or box[3] - box[1] < 2:
            return 0.0
        patch = picture.resize((FACE_DETAIL_PX, FACE_DETAIL_PX), Image.Resampling.BILINEAR, box)
        return _detail(_luma(np.asarray(patch)))


def _report(timings: list[tuple[str, float]] | None, clock: dict[str, float]) -> None:
    if timings is not None:
        timings.extend((stage, seconds * 1000.0) for stage, seconds in clock.items())


def _head_pose(mesh: np.ndarray, depth: np.ndarray) -> tuple[float, float]:
    """Yaw and pitch (degrees) from the mesh's 3-D points: the face's vertical and across axes."""
    up = np.array([*(mesh[_FOREHEAD] - mesh[_CHIN]), depth[_FOREHEAD] - depth[_CHIN]])
    across = np.array(
        [*(mesh[_CHEEK_RIGHT] - mesh[_CHEEK_LEFT]), depth[_CHEEK_RIGHT] - depth[_CHEEK_LEFT]]
    )
    # Chin down brings the forehead toward the camera (smaller z).
    pitch = math.degrees(math.atan2(up[2], float(np.linalg.norm(up[:2])) + 1e-9))
    yaw = math.degrees(math.atan2(across[2], float(np.linalg.norm(across[:2])) + 1e-9))
    return yaw, pitch


# --- frame-level facts: the part of the policy that concerns people --------------------------


def join_eyes(left: float, right: float) -> float:
    """A face's P(closed) from its two eyes' (see EYE_SURE_CLOSED): the more open eye's,
    unless one eye is surely closed and the other leans closed, then both together."""
    low, high = sorted((left, right))
    if high >= EYE_SURE_CLOSED and low >= EYE_LEANS_CLOSED:
        odds = [math.log(max(p, 1e-6) / max(1 - p, 1e-6)) for p in (low, high)]
        return 1 / (1 + math.exp(-(odds[0] + odds[1]) / 2))
    return low


def eyes_closed_reason(faces: Sequence[Face]) -> bool:
    """True when a main subject has closed eyes; a blinking bystander is no reason to reject."""
    return any(f.eyes_closed for f in faces if f.is_main_subject)


def face_focus(faces: Sequence[Face]) -> FaceFocus:
    """Focus where it matters in a photo of people: on the sharpest main subject's eyes.

    The sharpest, not the mean: with shallow depth of field one sharp face in a group is the
    photographer's choice, and the caller's whole-frame measure still sees a missed shot.
    """
    main = [f for f in faces if f.is_main_subject]
    if not main:
        return FaceFocus(len(faces), 0, 0.0, 0.0, False)
    eye = max(f.eye_sharpness or 0.0 for f in main)
    return FaceFocus(
        faces=len(faces),
        main_subjects=len(main),
        eye_sharpness=eye,
        face_sharpness=max(f.face_sharpness for f in main),
        eyes_sharp=eye >= EYES_SHARP_ABOVE,
    )
