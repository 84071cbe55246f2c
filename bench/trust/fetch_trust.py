#!/usr/bin/env python3
"""Rebuild the trust benchmark's known-good set from bench/trust/MANIFEST.tsv.

    python bench/trust/fetch_trust.py [TARGET] [--mirrors DIR] [--online] [--check]

TARGET (default ../data/trust beside the checkout) receives every photo of the manifest under
its ``file`` name and a ``labels.tsv`` (file, category, people, faces, source, source_path,
license, sha256) that bench/eval_trust.py reads. The photos never enter the repository or the
package: most carry research-only or unknown terms (see the licence column).

Where each photo comes from (the manifest's ``source`` column):

- ``shared:eval/natural``: copied from ../shared/eval/natural (the path column is relative
  to ../shared).
- ``debian:PKG=VERSION``: ``apt-get download PKG=VERSION`` and ``dpkg-deb -x``; the path is
  inside the package.
- ``pypi:NAME==VERSION``: ``pip download --no-deps NAME==VERSION`` and the path inside the wheel.
- ``OWNER/REPO@COMMIT``: ``git cat-file blob COMMIT:PATH`` from a bare mirror of the
  repository. Mirrors are looked for as ``DIR/OWNER+REPO/repo`` (the layout of the search
  tool's ``fetch``), ``DIR/OWNER+REPO``, ``DIR/OWNER/REPO.git`` and ``DIR/OWNER/REPO``; DIR is
  ``--mirrors`` (default /work/.mirror). Missing mirrors are listed at the end with the
  number of photos each would give. ``--online`` downloads those files instead from
  ``https://raw.githubusercontent.com/OWNER/REPO/COMMIT/PATH``, where the network allows it.

The same script fetches again the real phone, web and video files kept in tests/data/formats
from their sources: ``python bench/trust/fetch_trust.py FOLDER --manifest
tests/data/formats/MANIFEST.tsv``.

Every file is checked against the manifest's sha256 and against ../shared/eval/RESERVED.sha256
(a reserved photo is never written). ``--check`` only verifies an existing TARGET. Exit status
0 when every photo is in place and verified, 1 otherwise.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SHARED = ROOT.parent / "shared"
MANIFEST = HERE / "MANIFEST.tsv"
LABEL_COLUMNS = [
    "file", "category", "people", "faces", "source", "source_path", "license", "sha256"
]  # fmt: skip


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_manifest(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def mirror_for(repo: str, roots: list[Path]) -> Path | None:
    owner, name = repo.split("/", 1)
    for root in roots:
        for candidate in (
            root / f"{owner}+{name}" / "repo",
            root / f"{owner}+{name}",
            root / owner / f"{name}.git",
            root / owner / name,
        ):
            if (candidate / "objects").is_dir() or (candidate / ".git").exists():
                return candidate
    return None


def from_git(mirror: Path, commit: str, path: str) -> bytes | None:
    git_dir = mirror / ".git" if (mirror / ".git").exists() else mirror
    run = subprocess.run(
        ["git", "--git-dir", str(git_dir), "cat-file", "blob", f"{commit}:{path}"],
        capture_output=True,
    )
    return run.stdout if run.returncode == 0 else None


def from_raw(repo: str, commit: str, path: str) -> bytes | None:
    url = f"https://raw.githubusercontent.com/{repo}/{commit}/{urllib.request.quote(path)}"
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.read()
    except OSError:
        return None


class Packages:
    """Debian packages and PyPI wheels, each downloaded and unpacked once."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.unpacked: dict[str, Path | None] = {}

    def debian(self, spec: str) -> Path | None:
        if spec not in self.unpacked:
            folder = self.work / spec.replace(":", "_").replace("=", "_")
            folder.mkdir(parents=True, exist_ok=True)
            got = subprocess.run(["apt-get", "download", spec], cwd=folder, capture_output=True)
            debs = list(folder.glob("*.deb"))
            if got.returncode != 0 or not debs:
                print(f"  apt-get download {spec} failed: {got.stderr.decode()[-200:]}")
                self.unpacked[spec] = None
            else:
                subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(folder / "x")], check=True)
                self.unpacked[spec] = folder / "x"
        return self.unpacked[spec]

    def pypi(self, spec: str) -> Path | None:
        key = "pypi:" + spec
        if key not in self.unpacked:
            folder = self.work / spec.replace("=", "_")
            folder.mkdir(parents=True, exist_ok=True)
            got = subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(folder), spec],
                capture_output=True,
            )
            wheels = list(folder.glob("*.whl"))
            if got.returncode != 0 or not wheels:
                self.unpacked[key] = None
            else:
                shutil.unpack_archive(str(wheels[0]), str(folder / "x"), format="zip")
                self.unpacked[key] = folder / "x"
        return self.unpacked[key]


def fetch_one(row: dict, packages: Packages, roots: list[Path], online: bool, missing: dict):
    source, path = row["source"], row["path"]
    if source.startswith("shared:"):
        file = SHARED / path
        return file.read_bytes() if file.exists() else None
    if source.startswith("debian:"):
        unpacked = packages.debian(source[len("debian:") :])
        file = unpacked / path.lstrip("/") if unpacked else None
        return file.read_bytes() if file and file.exists() else None
    if source.startswith("pypi:"):
        unpacked = packages.pypi(source[len("pypi:") :])
        file = unpacked / path if unpacked else None
        return file.read_bytes() if file and file.exists() else None
    repo, commit = source.split("@", 1)
    mirror = mirror_for(repo, roots)
    data = from_git(mirror, commit, path) if mirror else None
    if data is None and online:
        data = from_raw(repo, commit, path)
    if data is None:
        missing[repo] += 1
    return data


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", type=Path, nargs="?", default=ROOT.parent / "data" / "trust")
    parser.add_argument("--manifest", type=Path, default=MANIFEST)
    parser.add_argument("--mirrors", type=Path, action="append", default=None)
    parser.add_argument("--online", action="store_true", help="fall back to raw GitHub files")
    parser.add_argument("--check", action="store_true", help="only verify TARGET")
    args = parser.parse_args()

    rows = read_manifest(args.manifest)
    reserved_file = SHARED / "eval" / "RESERVED.sha256"
    reserved = set(reserved_file.read_text().split()) if reserved_file.exists() else set()
    if not reserved:
        print(f"warning: {reserved_file} not found: cannot check for reserved photos")
    roots = args.mirrors or [Path("/work/.mirror")]
    args.target.mkdir(parents=True, exist_ok=True)
    missing: dict[str, int] = defaultdict(int)
    bad: list[str] = []
    written = present = 0
    with tempfile.TemporaryDirectory(prefix="fetch-trust-") as work:
        packages = Packages(Path(work))
        for row in rows:
            if row["sha256"] in reserved:
                bad.append(f"{row['file']}: listed in RESERVED.sha256, never used")
                continue
            out = args.target / row["file"]
            if out.exists() and sha256(out.read_bytes()) == row["sha256"]:
                present += 1
                continue
            if args.check:
                bad.append(f"{row['file']}: {'wrong sha256' if out.exists() else 'missing'}")
                continue
            data = fetch_one(row, packages, roots, args.online, missing)
            if data is None:
                bad.append(f"{row['file']}: not found ({row['source']} {row['path']})")
            elif sha256(data) != row["sha256"]:
                bad.append(f"{row['file']}: sha256 differs from the manifest")
            else:
                tmp = out.with_name("." + out.name + ".part")
                tmp.write_bytes(data)
                tmp.replace(out)
                written += 1
    with open(args.target / "labels.tsv", "w", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
        writer.writerow(LABEL_COLUMNS)
        for row in rows:
            if (args.target / row["file"]).exists() and row["sha256"] not in reserved:
                writer.writerow(
                    [row["file"], row["category"], row["people"], row["faces"], row["source"],
                     row["path"], row["licence"], row["sha256"]]
                )  # fmt: skip
    print(
        f"{args.target}: {present} already there, {written} written, {len(bad)} missing or bad"
        f" of {len(rows)}"
    )
    for line in bad[:20]:
        print("  " + line)
    if len(bad) > 20:
        print(f"  ... and {len(bad) - 20} more")
    if missing:
        print("mirrors not found (bring them with the search tool's fetch, or use --online):")
        for repo, count in sorted(missing.items(), key=lambda kv: -kv[1]):
            print(f"  {repo}: {count} photos, expected at {roots[0]}/{repo.replace('/', '+')}/repo")
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
