#!/usr/bin/env python3
"""Derive the fast variants of the converted models: same weights, cheaper to run.

Usage (from the repository root; needs the ``onnx`` package, build time only):

    python models/quantize.py                          # the shipped derived model(s)
    python models/quantize.py --lite0-int8 /tmp/int8   # the int8 experiment (not shipped)

- ``face_detection_full_anysize.onnx``: BlazeFace full range with its input's height and
  width made free (any multiple of 32). The network is fully convolutional, so one run
  over a whole 480x320 frame does what 8 overlapping 192 px tiles did, for about half the
  work. Same weights, rewritten for the blocked layout (below); at 192x192 it gives the
  parent's outputs.
- ``face_landmark.onnx`` and ``iris_landmark.onnx``, rewritten in place for the blocked
  layout: run this script after ``build_models.py``.

The blocked layout: on x86 (AVX2, AVX-512) onnxruntime runs convolutions on channels in
blocks of 8 or 16 ("NCHWc") and fuses a following Add and Relu into them, but only while
every op of a chain supports that layout and the channel counts fit its blocks. MediaPipe's
graphs break it three ways, each costing a reorder of the tensor out of the layout and back:
PRelu (the mesh and iris models: 23 and 53 of them), the narrow 8-36 channel bottlenecks and
the channel Pad of the residual shortcuts (BlazeFace). The rewrite computes the same
function with ops that stay in the layout: PRelu(x) = Relu(x) + (-a) * Relu(-x), the two
scalings as depthwise 1x1 convolutions; narrow channels padded to a multiple of 16 with
zero weights; the shortcut's zero channels made by a 1x1 convolution with zero weights and
concatenated. Outputs match the parent to ~1e-6 (checked here on every run). Measured on
this project's 2-core machine, one thread: mesh 3.7 -> 1.1 ms, iris 3.7 -> 1.5 ms,
the any-size search at 480x320 15.3 -> 13.1 ms. Without the blocked layout (onnxruntime
at ORT_ENABLE_EXTENDED) the mesh and iris are still faster (5.5 -> 3.7, 4.6 -> 3.9 ms);
the search is slower (28 -> 32 ms): the zero channels then cost real work.
- ``--lite0-int8 DIR``: EfficientNet-Lite0 with onnxruntime's static int8 quantization
  (QDQ, per-channel weights, calibrated on the photos of ../shared/eval/natural prepared
  exactly as postselectd feeds the backbone), written into DIR as a complete models folder
  (the other models copied) under the fp32 file's name, so that
  ``POSTSELECTD_MODELS=DIR python bench/eval_quality.py ...`` evaluates it. Not shipped:
  2.1x faster (9.3 -> 4.4 ms) but the embedding drifts (cosine to fp32 min 0.911), the
  trust benchmark's checks and the shipped head's landscape recall move the wrong way a
  little; with the keeper head retrained on it, one blurred frame of eval/blur becomes a
  check instead of a reject (models/MODELS.md).

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


# onnxruntime's NCHWc block: 16 floats with AVX-512 (and ARM NEON builds), 8 with AVX2.
BLOCK = 16


def _attr(node: onnx.NodeProto, name: str, default=None):
    for attribute in node.attribute:
        if attribute.name == name:
            return onnx.helper.get_attribute_value(attribute)
    return default


class _Graph:
    """Initializers by name, consumers by tensor, and fresh initializers for rewritten nodes."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.graph = model.graph
        self.init = {i.name: i for i in self.graph.initializer}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in self.graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.outputs = {o.name for o in self.graph.output}

    def array(self, name: str) -> np.ndarray:
        return onnx.numpy_helper.to_array(self.init[name])

    def add(self, name: str, array: np.ndarray) -> str:
        """A new float32 initializer (weights may be shared by nodes left unchanged)."""
        tensor = onnx.numpy_helper.from_array(array.astype(np.float32), name)
        self.graph.initializer.append(tensor)
        self.init[name] = self.graph.initializer[-1]
        return name

    def drop_unused(self) -> None:
        used = {name for node in self.graph.node for name in node.input}
        keep = [i for i in self.graph.initializer if i.name in used]
        del self.graph.initializer[:]
        self.graph.initializer.extend(keep)


def _pad_rows(array: np.ndarray, extra: int, axis: int = 0) -> np.ndarray:
    shape = list(array.shape)
    shape[axis] = extra
    return np.concatenate([array, np.zeros(shape, array.dtype)], axis=axis)


def _pad_narrow_chains(g: _Graph) -> int:
    """Conv -> (Relu) -> depthwise Conv -> (Relu) -> Conv chains whose inner channel count is
    not a multiple of BLOCK: the inner channels padded with zero weights and biases (zero in,
    zero out through Relu and the depthwise conv; the last conv ignores them)."""
    padded = 0
    for node in list(g.graph.node):
        if node.op_type != "Conv" or _attr(node, "group", 1) != 1:
            continue
        channels = g.array(node.input[1]).shape[0]
        if channels % BLOCK == 0:
            continue
        plan: list[tuple[onnx.NodeProto, str]] = []
        frontier, ok = [node.output[0]], True
        while frontier and ok:
            tensor = frontier.pop()
            ok = tensor not in g.outputs
            for user in g.consumers.get(tensor, []) if ok else []:
                group = _attr(user, "group", 1)
                if user.op_type == "Relu":
                    plan.append((user, "same"))
                    frontier.append(user.output[0])
                elif user.op_type == "Conv" and user.input[0] == tensor and group == channels:
                    plan.append((user, "depthwise"))
                    frontier.append(user.output[0])
                elif user.op_type == "Conv" and user.input[0] == tensor and group == 1:
                    plan.append((user, "reads"))
                else:
                    ok = False
                    break
        if not ok:
            continue
        extra = -channels % BLOCK
        for target, kind in [(node, "writes"), *plan]:
            if kind == "same":
                continue
            weight = g.array(target.input[1])
            axis = 1 if kind == "reads" else 0
            target.input[1] = g.add(f"{target.name}__w_blocked", _pad_rows(weight, extra, axis))
            if kind != "reads" and len(target.input) > 2:
                bias = g.array(target.input[2])
                target.input[2] = g.add(f"{target.name}__b_blocked", _pad_rows(bias, extra))
            if kind == "depthwise":
                for attribute in target.attribute:
                    if attribute.name == "group":
                        attribute.i = channels + extra
        padded += 1
    return padded


def _prelu_as_relu(g: _Graph) -> int:
    """PRelu(x, a) = Relu(x) + (-a) * Relu(-x); the scalings are depthwise 1x1 convolutions
    and the sum is fused into the second one."""
    nodes = list(g.graph.node)
    del g.graph.node[:]
    count = 0
    for node in nodes:
        slope = g.array(node.input[1]) if node.op_type == "PRelu" else None
        if slope is None or slope.size != max(slope.shape, default=1):
            g.graph.node.append(node)
            continue
        channels = slope.size
        x, name = node.input[0], node.name
        negate = g.add(f"{name}__negate", np.full((channels, 1, 1, 1), -1.0))
        scale = g.add(f"{name}__slope", -slope.reshape(channels, 1, 1, 1))
        make = onnx.helper.make_node
        g.graph.node.extend(
            [
                make("Relu", [x], [f"{name}__pos"], name=f"{name}__relu"),
                make(
                    "Conv",
                    [x, negate],
                    [f"{name}__neg"],
                    name=f"{name}__neg_conv",
                    group=channels,
                    kernel_shape=[1, 1],
                ),
                make("Relu", [f"{name}__neg"], [f"{name}__neg_relu"], name=f"{name}__neg_relu"),
                make(
                    "Conv",
                    [f"{name}__neg_relu", scale],
                    [f"{name}__neg_scaled"],
                    name=f"{name}__slope_conv",
                    group=channels,
                    kernel_shape=[1, 1],
                ),
                make("Add", [f"{name}__neg_scaled", f"{name}__pos"], [node.output[0]], name=name),
            ]
        )
        count += 1
    return count


def _channel_pad_as_concat(g: _Graph) -> int:
    """A zero Pad of the channel axis by a multiple of BLOCK -> Concat(x, a 1x1 convolution
    of x with zero weights): both kept in the blocked layout, unlike Pad."""
    shapes = onnx.shape_inference.infer_shapes(g.model).graph
    channels_of = {
        v.name: v.type.tensor_type.shape.dim[1].dim_value
        for v in [*shapes.value_info, *shapes.input]
        if len(v.type.tensor_type.shape.dim) == 4
    }
    nodes = list(g.graph.node)
    del g.graph.node[:]
    count = 0
    for node in nodes:
        pads = (
            g.array(node.input[1]).tolist()
            if node.op_type == "Pad" and len(node.input) > 1 and node.input[1] in g.init
            else None
        )
        value = (
            float(g.array(node.input[2]))
            if pads and len(node.input) > 2 and node.input[2] in g.init
            else 0.0
        )
        mode = _attr(node, "mode", b"constant")
        channels = channels_of.get(node.input[0], 0)
        if (
            pads is None
            or len(pads) != 8
            or any(pads[i] for i in (0, 1, 2, 3, 4, 6, 7))
            or pads[5] % BLOCK
            or value != 0.0
            or mode not in (b"constant", "constant")
            or not channels
        ):
            g.graph.node.append(node)
            continue
        zeros = g.add(f"{node.name}__zero_w", np.zeros((pads[5], channels, 1, 1)))
        make = onnx.helper.make_node
        g.graph.node.extend(
            [
                make(
                    "Conv",
                    [node.input[0], zeros],
                    [f"{node.name}__zeros"],
                    name=f"{node.name}__zero_conv",
                    kernel_shape=[1, 1],
                ),
                make(
                    "Concat",
                    [node.input[0], f"{node.name}__zeros"],
                    [node.output[0]],
                    name=node.name,
                    axis=1,
                ),
            ]
        )
        count += 1
    return count


def blocked_layout(model: onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    """The same function with ops onnxruntime keeps in its blocked layout (module docstring).

    Needs fixed input dimensions (shape inference finds the Pads' channels). Idempotent.
    Returns the rewritten copy and what was done, for ``postselectd.derived_from``.
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = _Graph(model)
    chains = _pad_narrow_chains(g)
    prelus = _prelu_as_relu(g)
    g.drop_unused()
    g = _Graph(model)
    pads = _channel_pad_as_concat(g)
    g.drop_unused()
    del model.graph.value_info[:]
    onnx.checker.check_model(model)
    done = [
        f"{prelus} PRelu as Relu + depthwise 1x1 convs" if prelus else "",
        f"{chains} narrow conv chains padded to {BLOCK} channels" if chains else "",
        f"{pads} channel Pads as Concat with zero convs" if pads else "",
    ]
    return model, "; ".join(d for d in done if d)


def _same_outputs(
    label: str, parent: Path | bytes, child: Path | bytes, shape: tuple[int, ...]
) -> None:
    """The rewritten model must compute what its parent does (random and flat inputs)."""
    a, b = _session(parent), _session(child)
    name = a.get_inputs()[0].name
    rng = np.random.default_rng(0)
    for x in (rng.uniform(-1, 1, shape), rng.uniform(0, 1, shape), np.zeros(shape)):
        feed = {name: x.astype(np.float32)}
        for want, got in zip(a.run(None, feed), b.run(None, feed), strict=True):
            diff = float(np.abs(want - got).max() / max(1.0, np.abs(want).max()))
            if diff > 1e-5:
                raise SystemExit(f"{label}: outputs differ from the parent by {diff:.2g}")


def rewrite_in_place(out: Path, name: str) -> Path:
    """``name``.onnx rewritten for the blocked layout (a no-op when it already is)."""
    source = HERE / f"{name}.onnx"
    model = onnx.load(str(source))
    rewritten, done = blocked_layout(model)
    if done:
        meta = {p.key: p.value for p in model.metadata_props}
        before = meta.get("postselectd.derived_from")
        note = f"{name}.onnx as build_models.py converts it, rewritten: {done}"
        _set_meta(rewritten, {"postselectd.derived_from": before or note})
    dims = rewritten.graph.input[0].type.tensor_type.shape.dim
    shape = tuple(d.dim_value or 1 for d in dims)
    data = rewritten.SerializeToString()
    _same_outputs(name, source, data, shape)
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{name}.onnx"
    target.write_bytes(data)
    return target


def anysize(out: Path) -> Path:
    parent = HERE / "face_detection_full.onnx"
    model, done = blocked_layout(onnx.load(str(parent)))
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
            "postselectd.derived_from": (
                f"face_detection_full.onnx (input height/width freed; {done})"
            ),
            "postselectd.input_multiple": str(INPUT_MULTIPLE),
            "postselectd.description": (
                "BlazeFace full range, any input size (multiple of 32): anchors every 4 px; "
                "regressors in input px as at 192"
            ),
        },
    )
    onnx.checker.check_model(model)
    data = model.SerializeToString()
    _same_outputs("anysize", parent, data, (1, 3, 192, 192))
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
    for name in ("face_landmark", "iris_landmark"):
        print(rewrite_in_place(args.out, name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
