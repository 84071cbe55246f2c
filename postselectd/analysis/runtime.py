"""onnxruntime sessions, configured for a background service.

The only module that imports onnxruntime. Each model's input contract (size, layout,
normalization) is read from the ONNX file's metadata, written there by
models/build_models.py, so the code never hard-codes it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import platform
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from postselectd.analysis.measure import as_picture
from postselectd.config import user_cache_dir
from postselectd.versions import MODELS_ENV, ModelError, models_dir  # noqa: F401 (imported from here)

log = logging.getLogger(__name__)

_PREFERRED = (
    "CoreMLExecutionProvider",
    "CUDAExecutionProvider",
    "DmlExecutionProvider",
    "OpenVINOExecutionProvider",
)


# OnnxModel.prepare halves an image (box filter) while its short side is at least this many
# times the model's input side, before the bilinear resize to the input.
HALVE_ABOVE = 4


_logged_choices: set[tuple[str, ...]] = set()


def choose_providers(setting: str) -> list[str]:
    """``auto``: the first of CoreML, CUDA, DirectML, OpenVINO onnxruntime offers, else CPU.

    The choice is logged once per process (at start: the model check loads the models),
    at INFO for ``auto``.
    """
    available = ort.get_available_providers()
    chosen = ["CPUExecutionProvider"]
    if setting == "auto":
        for name in _PREFERRED:
            if name in available:
                chosen = [name, "CPUExecutionProvider"]
                break
    key = (setting, *chosen)
    if key not in _logged_choices:
        _logged_choices.add(key)
        # INFO only when there was a choice to make: with "cpu" the start-up stays quiet
        # (a bad model is then the one line a user reads).
        log.log(
            logging.INFO if setting == "auto" else logging.DEBUG,
            "onnxruntime %s: providers %s (providers: %s; offered: %s)",
            ort.__version__,
            ", ".join(chosen),
            setting,
            ", ".join(available),
        )
    return chosen


def offered_providers() -> tuple[str, list[str]]:
    """onnxruntime's version and the providers this build of it offers."""
    return ort.__version__, list(ort.get_available_providers())


@dataclass(frozen=True)
class InputContract:
    width: int
    height: int
    layout: str  # "NCHW" or "NHWC"
    mean: float
    std: float


def _parse_normalization(text: str) -> tuple[float, float]:
    """``mean=127.0;std=128.0`` -> (127, 128): the model wants (pixel - mean) / std."""
    fields = {}
    for part in text.replace(",", ";").split(";"):
        if "=" in part:
            key, value = part.split("=", 1)
            fields[key.strip()] = float(value)
    if "mean" in fields and "std" in fields:
        return fields["mean"], fields["std"]
    if "scale" in fields and "offset" in fields:
        # pixel * scale + offset == (pixel - mean) / std
        return -fields["offset"] / fields["scale"], 1.0 / fields["scale"]
    raise ValueError(f"unreadable normalization {text!r}")


def load_session(
    path: Path, threads: int = 1, providers: list[str] | None = None
) -> tuple[ort.InferenceSession, dict[str, str]]:
    """An onnxruntime session set up for a background service, and the model's metadata.

    On the CPU the session comes from the optimized model saved at an earlier start
    (``optimized_models_dir``), which skips onnxruntime's graph optimizations: 44 ms
    instead of 118 ms for the eight shipped models, in every worker at every start
    (bench/start_time.py). The saved graph is the one onnxruntime would have made, so
    the outputs are the same to the bit (tests/test_model_cache.py).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: model file is missing")
    providers = providers or ["CPUExecutionProvider"]
    session = _cached_session(path, threads, providers)
    if session is None:
        session = _session(path, path, _options(threads), providers)
    return session, dict(session.get_modelmeta().custom_metadata_map)


def _options(threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Spinning threads burn most of a core while the daemon waits for files.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


def _session(
    model: Path, source: Path, options: ort.SessionOptions, providers: list[str]
) -> ort.InferenceSession:
    """``source``'s session; ModelError naming ``model`` if onnxruntime cannot load it."""
    try:
        return ort.InferenceSession(str(source), options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{model}: cannot load model ({first[:200]})") from None


def optimized_models_dir() -> Path:
    """Where onnxruntime's optimized models are kept: a cache, never required (a folder
    that cannot be written, or a damaged file in it, costs the start-up time only)."""
    return user_cache_dir() / "optimized-models"


# What the saved optimized graph depends on besides the model file: onnxruntime's
# optimizers, the providers it was made for, and the optimization level.
_OPTIMIZATION = ort.GraphOptimizationLevel.ORT_ENABLE_ALL


@functools.cache
def _hardware() -> str:
    """The CPU the saved graphs are made for. onnxruntime's documentation asks that a
    graph optimized offline run only on the hardware it was made on (its NCHWc layouts
    follow the CPU's vector width), and a home folder is often shared by machines with
    different CPUs (NFS homes, a cluster's nodes): each gets graphs of its own."""
    parts = [platform.machine(), platform.processor()]
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            for line in info:  # the first processor's: its model and instruction sets
                if not line.strip():
                    break
                if line.startswith(("vendor_id", "model name", "flags", "Features", "CPU ")):
                    parts.append(" ".join(line.split()))
    except OSError:
        pass  # macOS, Windows: the machine and processor names
    return "|".join(parts)


def _cache_key(path: Path, providers: list[str]) -> str:
    """``STEM-KEY``: KEY hashes onnxruntime's version, the model file's sha256, the
    providers, the optimization level and the CPU, so a new model, onnxruntime or
    machine never meets an old graph."""
    key = "|".join(
        (ort.__version__, _sha256(path), ",".join(providers), str(_OPTIMIZATION), _hardware())
    )
    return f"{path.stem}-{hashlib.sha256(key.encode()).hexdigest()[:32]}"


def _sha256(path: Path) -> str:
    """The model file's sha256, remembered beside the saved graphs for as long as the
    file's inode, size, mtime and ctime stay the same (hashing the 28 MB of the shipped
    models takes ~30 ms, at every worker's start; any write to the file changes its
    ctime, which no tool can set back)."""
    stat = path.stat()
    identity = f"{stat.st_ino} {stat.st_size} {stat.st_mtime_ns} {stat.st_ctime_ns}"
    place = hashlib.sha256(str(path.absolute()).encode()).hexdigest()[:16]
    memo = optimized_models_dir() / f"{path.stem}-{place}.sha256"
    try:
        remembered, digest = memo.read_text(encoding="ascii").rsplit(" ", 1)
        if remembered == identity and len(digest) == 64:
            return digest
    except (OSError, ValueError, UnicodeDecodeError):
        pass
    hasher = hashlib.sha256()
    with path.open("rb") as model:
        while chunk := model.read(1 << 20):
            hasher.update(chunk)
    digest = hasher.hexdigest()
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(dir=memo.parent, prefix=f".{memo.name}-")
    except OSError:
        return digest  # a cache that cannot be written: hashed again next time
    try:
        with os.fdopen(handle, "w", encoding="ascii") as out:
            out.write(f"{identity} {digest}")
        os.replace(temp, memo)
    except OSError:
        Path(temp).unlink(missing_ok=True)
    return digest


def _signature(session: ort.InferenceSession) -> dict:
    """What a session's model says it is: inputs, outputs and metadata, as JSON reads it."""
    ports = {
        "inputs": [[p.name, p.shape, p.type] for p in session.get_inputs()],
        "outputs": [[p.name, p.shape, p.type] for p in session.get_outputs()],
        "metadata": dict(session.get_modelmeta().custom_metadata_map),
    }
    return json.loads(json.dumps(ports))


def _cached_session(path: Path, threads: int, providers: list[str]) -> ort.InferenceSession | None:
    """The session from ``path``'s saved optimized model, saving it first if needed;
    None where there is no cache to use (then the caller loads the model itself).

    Only for the CPU: the accelerators' providers compile parts of the graph into nodes
    onnxruntime cannot save. A saved model is used only if it loads and says it is the
    model it was saved from (its .json beside it); else it is made again, with one line.
    """
    if providers != ["CPUExecutionProvider"]:
        return None
    folder = optimized_models_dir()
    try:
        key = _cache_key(path, providers)
    except OSError:
        return None
    saved, signature = folder / f"{key}.onnx", folder / f"{key}.json"
    if saved.is_file():
        try:
            expected = json.loads(signature.read_text(encoding="utf-8"))
            options = _options(threads)
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            session = ort.InferenceSession(str(saved), options, providers=providers)
            if _signature(session) == expected:
                return session
            problem = "it is not the optimized form of this model"
        except Exception as exc:  # unreadable, truncated, foreign: made again below
            text = str(exc).strip()
            problem = text.splitlines()[0][:200] if text else type(exc).__name__
        log.info("%s: saved optimized model %s ignored (%s); made again", path, saved, problem)
    return _save_optimized(path, threads, providers, saved, signature)


def _save_optimized(
    path: Path, threads: int, providers: list[str], saved: Path, signature: Path
) -> ort.InferenceSession | None:
    """Load ``path`` and have onnxruntime write its optimized graph to a temp file, then
    move it (and its signature) into place: a reader never sees half a file."""
    try:
        saved.parent.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(dir=saved.parent, prefix=f".{saved.stem}-")
        os.close(handle)
    except OSError as exc:
        log.debug("optimized models not saved in %s: %s", saved.parent, exc)
        return None
    temp = Path(temp_name)
    temp_signature = temp.with_name(temp.name + ".json")
    options = _options(threads)
    options.optimized_model_filepath = str(temp)
    session = None
    try:
        session = ort.InferenceSession(str(path), options, providers=providers)
        temp_signature.write_text(json.dumps(_signature(session)), encoding="utf-8")
        os.replace(temp_signature, signature)
        os.replace(temp, saved)
    except OSError as exc:  # a full disk: the session, if made, is still good
        log.debug("optimized model %s not saved: %s", saved, exc)
    except Exception:  # a bad model: the caller's plain load says what is wrong with it
        session = None
    finally:
        for leftover in (temp, temp_signature):
            leftover.unlink(missing_ok=True)
    return session


class OnnxModel:
    """One ONNX session with its input contract."""

    def __init__(
        self,
        path: Path,
        threads: int = 1,
        providers: list[str] | None = None,
        outputs: tuple[str, ...] = (),
    ):
        self.path = Path(path)
        self.session, meta = load_session(self.path, threads, providers)
        self.metadata = meta
        self.name = meta.get("postselectd.name", self.path.stem)
        self.version = meta.get("postselectd.version", "0")
        try:
            width, height = (int(v) for v in meta["postselectd.input_size"].lower().split("x"))
            mean, std = _parse_normalization(meta["postselectd.normalization"])
            layout = meta.get("postselectd.layout", "NCHW").upper()
        except (KeyError, ValueError) as exc:
            raise ModelError(f"{self.path}: model metadata incomplete ({exc})") from None
        self.contract = InputContract(width, height, layout, mean, std)
        self.input_name = self.session.get_inputs()[0].name
        shape = self.session.get_inputs()[0].shape
        expected = (3, height, width) if layout == "NCHW" else (height, width, 3)
        if len(shape) != 4 or any(
            isinstance(d, int) and d != e for d, e in zip(shape[1:], expected, strict=True)
        ):
            raise ModelError(
                f"{self.path}: input shape {shape} does not match its metadata {expected}"
            )
        self.output_names = [o.name for o in self.session.get_outputs()]
        missing = [name for name in outputs if name not in self.output_names]
        if missing or meta.get("postselectd.name", self.path.stem) != self.path.stem:
            raise ModelError(
                f"{self.path}: this is the {meta.get('postselectd.name', 'unknown')} model "
                f"(outputs {', '.join(self.output_names)}), not {self.path.stem}"
            )

    def prepare(
        self, image: np.ndarray | Image.Image, halvings: Sequence[Image.Image] = ()
    ) -> np.ndarray:
        """An RGB image (Pillow, or uint8 array) -> one normalized input tensor (no batch axis).

        The image is first halved (box filter) while its short side stays at least
        HALVE_ABOVE times the input's, then resized (bilinear): a 1620x1080 preview is read
        from its 810x540 halving, which costs a third of one bilinear resize from full size
        and gives the same embedding to a cosine of >= 0.998 (44 camera previews).
        ``halvings``: the image's successive halvings (``Image.reduce(2)``) where the caller
        already made them (the face search's pyramid), so they are not made twice.
        """
        c = self.contract
        picture = as_picture(image)
        made = iter(halvings)
        while min(picture.size) >= HALVE_ABOVE * max(c.width, c.height):
            picture = next(made, None) or picture.reduce(2)
        resized = np.asarray(
            picture.resize((c.width, c.height), Image.Resampling.BILINEAR), dtype=np.float32
        )
        tensor = (resized - c.mean) / c.std
        if c.layout == "NCHW":
            tensor = tensor.transpose(2, 0, 1)
        return np.ascontiguousarray(tensor, dtype=np.float32)

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        outputs = self.session.run(None, {self.input_name: batch})
        return dict(zip(self.output_names, outputs, strict=True))
