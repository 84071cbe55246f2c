"""What a release carries: the sdist and the wheel, built as pip and `python -m build` do
(the wheel from the unpacked sdist), listed, and checked for what must and must not be in
them. Third-party test data (tests/data: fuzzed exiv2/ExifTool/rawsamples files under GPL
and CC BY-NC-SA, ExifTool's sample sidecars, phone-format samples) stays in the repository.
On failure the message lists the archive with its sizes.

Built with hatchling itself (in the test extra), without build isolation, so this works
offline: ~10 s, most of it compressing the ONNX models twice."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

import pytest
from conftest import ROOT

import postselectd

NAME = f"postselectd-{postselectd.__version__}"

# Top-level entries of the sdist: the package, what its wheel takes in (models, service
# files), the benchmarks the README's figures cite, and the files every sdist has.
SDIST_TOP = {
    "postselectd",
    "models",
    "service",
    "bench",
    "README.md",
    "LICENSE",
    "config.example.yaml",
    "pyproject.toml",
    "PKG-INFO",
    ".gitignore",
}
# Photos, raws and sidecars are test or evaluation data wherever they turn up.
DATA_SUFFIXES = {
    ".nef", ".nrw", ".crw", ".cr2", ".cr3", ".arw", ".sr2", ".raf", ".rw2", ".orf", ".dng",
    ".kdc", ".dcr", ".pef", ".srw", ".3fr", ".iiq", ".raw", ".jpg", ".jpeg", ".heic", ".heif",
    ".avif", ".png", ".tif", ".tiff", ".webp", ".xmp",
}  # fmt: skip


def _build(target: str, source: Path, out: Path) -> Path:
    done = subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", target, "-d", str(out)],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"hatchling build -t {target} in {source}:\n{done.stderr}"
    suffix = ".tar.gz" if target == "sdist" else ".whl"
    (built,) = out.glob(f"*{suffix}")
    return built


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> dict[str, dict[str, int]]:
    """{"sdist": {path: size}, "wheel": {path: size}}; sdist paths without NAME/."""
    out = tmp_path_factory.mktemp("dist")
    sdist = _build("sdist", ROOT, out / "sdist")
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if m.isfile()]
        # filter: Python 3.12+ and the security releases of 3.10/3.11 (tarfile.data_filter).
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(out / "unpacked", **safe)
    listing = {"sdist": {}, "wheel": {}}
    for member in members:
        path = PurePosixPath(member.name)
        assert path.parts[0] == NAME, member.name
        listing["sdist"][str(path.relative_to(NAME))] = member.size
    wheel = _build("wheel", out / "unpacked" / NAME, out / "wheel")
    with zipfile.ZipFile(wheel) as archive:
        listing["wheel"] = {i.filename: i.file_size for i in archive.infolist()}
    return listing


def _show(listing: dict[str, int]) -> str:
    total = sum(listing.values())
    lines = [f"{size:>12,}  {path}" for path, size in sorted(listing.items())]
    return "\n".join([*lines, f"{total:>12,}  total, {len(listing)} files"])


def _unwanted(paths) -> list[str]:
    return [
        p
        for p in paths
        if "__pycache__" in PurePosixPath(p).parts
        or PurePosixPath(p).suffix.lower() in {".pyc", *DATA_SUFFIXES}
    ]


def test_sdist_carries_no_tests_or_their_data(release):
    sdist = release["sdist"]
    assert sdist, "empty sdist"
    in_tests = [p for p in sdist if PurePosixPath(p).parts[0] == "tests"]
    assert in_tests == [], "tests/ (and its third-party data) in the sdist:\n" + _show(sdist)
    stray = sorted({PurePosixPath(p).parts[0] for p in sdist} - SDIST_TOP)
    assert stray == [], f"not meant to ship in the sdist: {stray}\n" + _show(sdist)
    assert _unwanted(sdist) == [], "data or caches in the sdist:\n" + _show(sdist)


def test_sdist_carries_the_package_models_and_service_files(release):
    sdist = release["sdist"]
    wanted = [
        *(str(p.relative_to(ROOT)) for p in sorted((ROOT / "postselectd").rglob("*.py"))),
        *(str(p.relative_to(ROOT)) for p in sorted((ROOT / "models").rglob("*.onnx"))),
        "models/MODELS.md",
        "service/postselectd.service",
        "service/org.postselectd.daemon.plist",
    ]
    missing = [p for p in wanted if p not in sdist]
    assert missing == [], f"missing from the sdist: {missing}\n" + _show(sdist)


def test_wheel_carries_the_models_their_licenses_and_the_service_files(release):
    """What postselectd looks up at run time in an installed wheel: the ONNX models in
    postselectd/_models (analysis/runtime.py), with MODELS.md and the license files the
    Apache-2.0 models must travel with, and the service templates in postselectd/_service
    (service.py). Each at the size of the checkout's file."""
    wheel = release["wheel"]
    wanted = {}
    for folder, packaged in (
        ("models", "postselectd/_models"),
        ("service", "postselectd/_service"),
    ):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.is_file() and (
                path.suffix == ".onnx"
                or path.name == "MODELS.md"
                or "LICENSES" in path.parts
                or folder == "service"
            ):
                wanted[f"{packaged}/{path.relative_to(ROOT / folder)}"] = path.stat().st_size
    assert any(p.endswith(".onnx") for p in wanted) and any("LICENSES/" in p for p in wanted)
    wrong = {p: (size, wheel.get(p)) for p, size in wanted.items() if wheel.get(p) != size}
    assert wrong == {}, (
        "missing or not the checkout's file (size, in wheel):\n"
        + "\n".join(f"  {p}: {sizes}" for p, sizes in wrong.items())
        + "\n"
        + _show(wheel)
    )


def test_wheel_carries_the_package_files_the_code_reads(release):
    """Files beside the code that it opens at run time (the report's styles and script,
    read with importlib.resources): each in the wheel at the checkout's size, wherever in
    the package they move."""
    wheel = release["wheel"]
    package = ROOT / "postselectd"
    wanted = {
        f"postselectd/{path.relative_to(package).as_posix()}": path.stat().st_size
        for path in sorted(package.rglob("*"))
        if path.is_file() and path.suffix not in (".py", ".pyc") and "__pycache__" not in path.parts
    }
    assert "postselectd/report/report.css" in wanted and "postselectd/report/report.js" in wanted
    wrong = {p: (size, wheel.get(p)) for p, size in wanted.items() if wheel.get(p) != size}
    assert wrong == {}, f"missing or not the checkout's file (size, in wheel): {wrong}\n" + _show(
        wheel
    )


def test_both_carry_the_projects_own_license(release):
    """Apache-2.0, as pyproject.toml declares: the text travels in the sdist and in the
    wheel's metadata, where pip-licenses and distribution packagers look for it."""
    assert "LICENSE" in release["sdist"], _show(release["sdist"])
    in_wheel = [p for p in release["wheel"] if PurePosixPath(p).name == "LICENSE"]
    assert [PurePosixPath(p).parts[0] for p in in_wheel] == [f"{NAME}.dist-info"], in_wheel
    assert "Apache License" in (ROOT / "LICENSE").read_text()


def test_wheel_carries_only_the_package(release):
    wheel = release["wheel"]
    outside = [
        p for p in wheel if PurePosixPath(p).parts[0] not in ("postselectd", f"{NAME}.dist-info")
    ]
    assert outside == [], f"outside the package in the wheel: {outside}\n" + _show(wheel)
    assert _unwanted(wheel) == [], "data or caches in the wheel:\n" + _show(wheel)
    assert "postselectd/cli.py" in wheel and "postselectd/analysis/faces.py" in wheel
