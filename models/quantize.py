#!/usr/bin/env python3
"""Derive the fast variants of the converted models: same weights, cheaper to run.

Usage (from the repository root; needs the ``onnx`` package, build time only):

    python models/quantize.py                          # the shipped derived model(s)
    python models/quantize.py --lite0-int8 /tmp/int8   # the int8 experiment (not shipped)

- ``face_detection_full_anysize.onnx``: BlazeFace full range with its input's height and
  width made free (any multiple of 32). The network is fully convolutional, so one run
  over a whole 480x320 frame does what 8 overlapping 192 px tiles did, for about half the
  work. Weights and graph are unchanged; at 192x192 it gives the parent's outputs.
- ``--lite0-int8 DIR``: EfficientNet-Lite0 with onnxruntime's static int8 quantization
  (QDQ, per-channel weights, calibrated on the photos of ../shared/eval/natural prepared
  exactly as postselectd feeds the backbone), written into DIR as a complete models folder
  (the other models copied) under the fp32 file's name, so that
  ``POSTSELECTD_MODELS=DIR python bench/eval_quality.py ...`` evaluates it. Not shipped:
  2.1x faster (9.3 -> 4.4 ms) but the embedding drifts (cosine to fp32 min 0.876) and
  eval_quality's faceblur AUC dropped 0.989 -> 0.988 (models/MODELS.md).

Each derived file carries its parent's ``postselectd.*`` metadata with its own name (the
int8 experiment: the parent's name, so it can stand in for it), description and
``postselectd.derived_from``; the script checks its outputs against the parent's.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
INPUT_MULTIPLE = 32


def _session(path: Path | bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    source = str(path) if isinstance(path, Path) else path
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def _set_meta(model: onnx.ModelProto, updates: dict[str, str]) -> None:
    meta = {p.key: p.value for p in model.metadata_props}
    meta.update(updates)
    del model.metadata_props[:]
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)


def anysize(out: Path) -> Path:
    parent = HERE / "face_detection_full.onnx"
    model = onnx.load(str(parent))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].ClearField("dim_value")
    dims[2].dim_param = "height"
    dims[3].ClearField("dim_value")
    dims[3].dim_param = "width"
    for output in model.graph.output:
        output.type.tensor_type.shape.dim[1].ClearField("dim_value")
        output.type.tensor_type.shape.dim[1].dim_param = "anchors"
    del model.graph.value_info[:]  # shapes inferred for 192x192 no longer hold
    _set_meta(
        model,
        {
            "postselectd.name": "face_detection_full_anysize",
            "postselectd.derived_from": "face_detection_full.onnx (input height/width freed)",
            "postselectd.input_multiple": str(INPUT_MULTIPLE),
            "postselectd.description": (
                "BlazeFace full range, any input size (multiple of 32): anchors every 4 px; "
                "regressors in input px as at 192"
            ),
        },
    )
    onnx.checker.check_model(model)
    data = model.SerializeToString()
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 192, 192)).astype(np.float32)
    want = _session(parent).run(None, {"image": x})
    got = _session(data).run(None, {"image": x})
    for w, g in zip(want, got, strict=True):
        diff = float(np.abs(w - g).max() / max(1.0, np.abs(w).max()))
        if diff > 1e-5:
            raise SystemExit(f"anysize: outputs differ from the parent by {diff:.2g}")
    wide = _session(data).run(None, {"image": np.zeros((1, 3, 320, 480), np.float32)})
    assert wide[0].shape == (1, 80 * 120, 16), wide[0].shape
    out.mkdir(parents=True, exist_ok=True)
    target = out / "face_detection_full_anysize.onnx"
    target.write_bytes(data)
    return target


def _calibration_inputs(shared: Path, limit: int) -> list[np.ndarray]:
    """Real photos, prepared exactly as postselectd feeds the backbone (runtime.OnnxModel)."""
    sys.path.insert(0, str(ROOT))
    from PIL import Image, ImageOps

    from postselectd.analysis.runtime import OnnxModel

    model = OnnxModel(HERE / "efficientnet_lite0.onnx", outputs=("embedding",))
    photos = sorted((shared / "eval" / "natural").glob("*.png"))
    photos += sorted((shared / "eval" / "natural").glob("*.jp*g"))
    if not photos:
        raise SystemExit(f"no calibration photos in {shared / 'eval' / 'natural'}")
    inputs = []
    for path in photos[:limit]:
        with Image.open(path) as im:
            image = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
        inputs.append(model.prepare(image)[None])
    return inputs


def lite0_int8(out: Path, shared: Path, limit: int = 200) -> Path:
    """The int8 experiment: a models folder in ``out`` whose Lite0 is quantized."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    parent = HERE / "efficientnet_lite0.onnx"
    inputs = _calibration_inputs(shared, limit)

    class Photos(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter({"image": x} for x in inputs)

        def get_next(self):
            return next(self.items, None)

    work = Path(tempfile.mkdtemp(prefix="postselectd-quantize-"))
    pre, quantized = work / "pre.onnx", work / "int8.onnx"
    quant_pre_process(str(parent), str(pre), skip_symbolic_shape=True)
    quantize_static(
        str(pre),
        str(quantized),
        Photos(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        calibrate_method=CalibrationMethod.MinMax,
    )
    model = onnx.load(str(quantized))
    _set_meta(
        model,
        {
            "postselectd.derived_from": (
                "efficientnet_lite0.onnx (onnxruntime static int8, QDQ, per-channel, MinMax "
                f"calibration on {len(inputs)} photos of shared/eval/natural)"
            ),
            "postselectd.description": "EfficientNet-Lite0, int8: embedding + ImageNet logits",
        },
    )
    data = model.SerializeToString()
    # The embedding is what postselectd uses: it must point the same way as the parent's.
    fp32, int8 = _session(parent), _session(data)
    cosines = []
    for x in inputs:
        a = fp32.run(["embedding"], {"image": x})[0][0]
        b = int8.run(["embedding"], {"image": x})[0][0]
        cosines.append(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12)))
    print(
        f"lite0-int8: embedding cosine to fp32 min {min(cosines):.4f} "
        f"median {float(np.median(cosines)):.4f} over {len(cosines)} photos"
    )
    out.mkdir(parents=True, exist_ok=True)
    for other in HERE.glob("*.onnx"):
        shutil.copy(other, out / other.name)
    target = out / "efficientnet_lite0.onnx"
    target.write_bytes(data)
    shutil.rmtree(work)
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--lite0-int8", type=Path, metavar="DIR", help="the int8 experiment")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    args = parser.parse_args()
    if args.lite0_int8:
        print(lite0_int8(args.lite0_int8, args.shared))
        return 0
    print(anysize(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
