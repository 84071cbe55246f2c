"""onnxruntime's saved optimized models: the same answers, and never required.

Each start would otherwise re-optimize every graph (118 ms of the 8 shipped models, in
every worker); analysis/runtime.py keeps the optimized graphs under the user cache dir.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
from conftest import copy_file, run_cli, shared_path

from postselectd.analysis import Analyzer
from postselectd.analysis.runtime import load_session, models_dir, optimized_models_dir
from postselectd.stages import analyze_file


def _no_cache(monkeypatch, tmp_path: Path) -> None:
    """A cache dir that cannot be made (its parent is a file): plain sessions."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))


def _answers(analyzer: Analyzer, photo: Path) -> tuple:
    analysis = analyze_file(photo, analyzer).analysis
    assert analysis is not None
    return (
        analysis.keeper_probability,
        analysis.reasons,
        analysis.findings,
        analysis.class_probabilities,
        analysis.judged_probabilities,
        repr(analysis.faces),
        analysis.embedding.tobytes(),
        analysis.measurements.tobytes(),
    )


def test_saved_optimized_models_give_the_same_analysis_of_a_real_nef(tmp_path, monkeypatch):
    photo = shared_path("samples", "nef", "DSC_0101.NEF")  # a portrait: every model runs
    _no_cache(monkeypatch, tmp_path)
    plain = _answers(Analyzer(), photo)

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    saving = Analyzer()  # makes the cache
    saved = sorted(p.name for p in optimized_models_dir().glob("*.onnx"))
    assert {name.rsplit("-", 1)[0] for name in saved} >= {
        "efficientnet_lite0",
        "keeper_head",
        "face_landmark",
        "iris_landmark",
    }
    from_cache = Analyzer()
    assert Path(from_cache.backbone.session._model_path).parent == optimized_models_dir()
    assert _answers(saving, photo) == plain
    assert _answers(from_cache, photo) == plain


def _keeper_head_output(session) -> np.ndarray:
    features = np.linspace(0.0, 1.0, session.get_inputs()[0].shape[1], dtype=np.float32)
    embedding = np.linspace(-1.0, 1.0, session.get_inputs()[1].shape[1], dtype=np.float32)
    (out,) = session.run(None, {"features": features[None], "embedding": embedding[None]})
    return out


def test_damaged_or_foreign_saved_model_is_made_again_with_one_line(tmp_path, monkeypatch, caplog):
    model = models_dir() / "keeper_head.onnx"
    _no_cache(monkeypatch, tmp_path)
    expected = _keeper_head_output(load_session(model)[0])
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    load_session(model)
    load_session(models_dir() / "eye_state.onnx")
    (saved,) = optimized_models_dir().glob("keeper_head-*.onnx")
    (other,) = optimized_models_dir().glob("eye_state-*.onnx")
    whole = saved.read_bytes()

    damages = {
        "truncated": lambda: saved.write_bytes(whole[: len(whole) // 2]),
        "foreign": lambda: shutil.copyfile(other, saved),
        "garbage": lambda: saved.write_bytes(b"not a model"),
    }
    for damage, do in damages.items():
        do()
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="postselectd.analysis.runtime"):
            session, meta = load_session(model)
        lines = [r for r in caplog.records if r.levelno >= logging.INFO]
        assert len(lines) == 1 and "ignored" in lines[0].getMessage(), damage
        assert meta["postselectd.name"] == "keeper_head", damage
        assert np.array_equal(_keeper_head_output(session), expected), damage
        assert saved.read_bytes() == whole, damage  # made again, whole
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="postselectd.analysis.runtime"):
            load_session(model)
        assert not caplog.records, damage  # and used quietly from then on
    assert not list(optimized_models_dir().glob(".*")), "temp files left behind"


def test_score_works_with_a_read_only_cache_folder(tmp_path, unprivileged):
    photo = copy_file(shared_path("samples", "nef", "DSC_0102.NEF"), tmp_path / "shoot")
    cache = tmp_path / "cache"
    folder = cache / "postselectd" / "optimized-models"
    folder.mkdir(parents=True)
    unprivileged.lock(folder, 0o555)
    try:
        result = run_cli(
            "score",
            str(photo),
            env={"XDG_CACHE_HOME": str(cache), "XDG_STATE_HOME": str(tmp_path / "state")},
            popen=unprivileged.popen,
        )
    finally:
        unprivileged.release(folder)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert photo.with_suffix(".xmp").exists()
    assert not list(folder.iterdir())


def test_a_model_file_changed_in_place_is_hashed_again(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    model = tmp_path / "models" / "keeper_head.onnx"
    model.parent.mkdir()
    shutil.copyfile(models_dir() / "keeper_head.onnx", model)
    assert load_session(model)[1]["postselectd.name"] == "keeper_head"
    (memo,) = optimized_models_dir().glob("keeper_head-*.sha256")
    # Rewritten in place, as an editor or `cp` over it would: same path, other bytes.
    model.write_bytes((models_dir() / "eye_state.onnx").read_bytes())
    assert load_session(model)[1]["postselectd.name"] == "eye_state"
    memo.write_text("garbage")
    assert load_session(model)[1]["postselectd.name"] == "eye_state"


def test_graphs_saved_on_another_cpu_are_not_used(tmp_path, monkeypatch):
    """A home folder shared by machines with different CPUs (NFS, a cluster's nodes):
    each machine uses the graphs optimized for its own CPU, never another's."""
    from postselectd.analysis import runtime

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    model = models_dir() / "keeper_head.onnx"
    load_session(model)
    here = sorted(optimized_models_dir().glob("keeper_head-*.onnx"))
    assert len(here) == 1
    runtime._hardware.cache_clear()
    monkeypatch.setattr(runtime, "_hardware", lambda: "another CPU without AVX2")
    load_session(model)  # made for this CPU, not taken from the other's
    there = sorted(optimized_models_dir().glob("keeper_head-*.onnx"))
    assert len(there) == 2 and here[0] in there
    session, _ = load_session(model)
    assert Path(session._model_path) in there and Path(session._model_path) != here[0]
