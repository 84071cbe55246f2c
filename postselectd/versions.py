"""Which analysis a kept result came from: one digest of the models and of the code that
measures with them.

Results are kept by it, not by postselectd's version alone: a models folder of your own
(``$POSTSELECTD_MODELS``, e.g. a quantized build) or a changed rule of the analysis makes
other analyses under the same version, and the journal's kept analyses (a re-copied photo
is not analysed again; the learning loop trains on corrections from them) and train's
feature cache must not serve the old ones. Light on purpose, no onnxruntime: the daemon's
main process keys its journal by it without loading a model.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from postselectd import __version__

MODELS_ENV = "POSTSELECTD_MODELS"


class ModelError(Exception):
    """A model file that is missing, corrupt or of the wrong shape; str() says which."""


def models_dir() -> Path:
    """The ONNX models: $POSTSELECTD_MODELS if set (a folder of your own models, e.g. a
    quantized build), else inside the installed package, else the repository's models/."""
    override = os.environ.get(MODELS_ENV)
    if override:
        folder = Path(override).expanduser()
        if not folder.is_dir():
            raise ModelError(f"{MODELS_ENV}={override}: not a folder")
        return folder
    package = Path(__file__).resolve().parent
    for candidate in (package / "_models", package.parent / "models"):
        if candidate.is_dir() and any(candidate.glob("*.onnx")):
            return candidate
    raise ModelError(
        f"no ONNX models found in {package / '_models'} or {package.parent / 'models'} "
        "(reinstall postselectd)"
    )


def analysis_code() -> list[Path]:
    """The code an analysis comes from: the analysis package (detector input, eye and
    focus rules and their constants), the preview decode and the raw containers' tags
    (orientation, capture time)."""
    package = Path(__file__).resolve().parent
    return [
        *sorted((package / "analysis").glob("*.py")),
        package / "preview.py",
        package / "rawmeta.py",
    ]


def files_digest(paths: Iterable[Path]) -> str:
    """16 hex digits over each file's name and bytes (every model, ~28 MB: ~40 ms)."""
    parts = [f"{path.name}:{hashlib.sha256(path.read_bytes()).hexdigest()}" for path in paths]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


_versions: dict[Path, str] = {}


def analysis_version() -> str:
    """postselectd's version and the digest of the models and the analysis code, e.g.
    ``0.1.0+3f1c...``; computed once per models folder and process."""
    folder = models_dir()
    if folder not in _versions:
        models = sorted(folder.glob("*.onnx"))
        _versions[folder] = f"{__version__}+{files_digest([*models, *analysis_code()])}"
    return _versions[folder]
