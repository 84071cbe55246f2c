"""Every profile, read back by real readers (exiftool, exiv2), not by our own parser.

For each profile the 13 sample NEFs are scored with `postselectd score --json`; what each
reader finds in the sidecars must equal what the JSON reported, and exiftool's validator
must find nothing to complain about.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from conftest import copy_file, need_tool, run_cli, shared_path

PROFILES = ("lightroom", "darktable", "digikam", "photomechanic")
COLOR_INDEX = {"Red": 0, "Yellow": 1, "Green": 2, "Blue": 3, "Purple": 4}
DIGIKAM_COLOR = {"Red": 1, "Yellow": 3, "Green": 4, "Blue": 5, "Purple": 6}
DIGIKAM_PICK = {"reject": 1, "": 2, "select": 3}
PHOTOMECHANIC_CLASS = {"Red": 1, "Yellow": 3, "Green": 4, "Blue": 5, "Purple": 6}


@pytest.fixture(scope="module", params=PROFILES)
def scored(request, tmp_path_factory) -> tuple[str, Path, list[dict]]:
    profile = request.param
    source = shared_path("samples", "nef")
    folder = tmp_path_factory.mktemp(f"shoot-{profile}")
    for nef in sorted(source.glob("*.NEF")):
        copy_file(nef, folder)
    config = folder.parent / f"{profile}.yaml"
    config.write_text(f"sidecar:\n  profiles: [{profile}]\n")
    result = run_cli("score", "--json", "--config", str(config), str(folder))
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert len(records) == 13
    return profile, folder, records


def _sidecar(record: dict) -> Path:
    [path] = record["sidecar"]
    return Path(path)


def _as_list(value) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def test_sidecars_are_named_as_the_profile_expects(scored):
    profile, _, records = scored
    for record in records:
        photo = Path(record["path"])
        expected = photo.with_suffix(".xmp")
        if profile in ("darktable", "digikam"):
            expected = photo.with_name(photo.name + ".xmp")
        assert _sidecar(record) == expected


def test_exiftool_reads_what_the_json_reported(scored):
    exiftool = need_tool("exiftool")
    profile, _, records = scored
    out = subprocess.run(
        [exiftool, "-json", "-n", "-G1", "-a", *(str(_sidecar(r)) for r in records)],
        capture_output=True,
        text=True,
        check=True,
    )
    read = {r["SourceFile"]: r for r in json.loads(out.stdout)}
    for record in records:
        tags = read[str(_sidecar(record))]
        name = Path(record["path"]).name
        label, verdict = record["label"], record["verdict"]
        assert tags["XMP-xmp:Rating"] == record["rating"], name
        ours = [k for k in _as_list(tags.get("XMP-lr:HierarchicalSubject")) if "PostSelect|" in k]
        assert ours == [f"PostSelect|{k}" for k in record["keywords"]], name
        subjects = _as_list(tags.get("XMP-dc:Subject"))
        # dc:subject carries leaf names only: "check|eyes" -> "eyes".
        assert all(k.rsplit("|", 1)[-1] in subjects for k in record["keywords"]), name
        assert tags["XMP-postselect:KeeperProbability"] == pytest.approx(
            record["keeper_probability"], abs=1e-4
        )
        assert _as_list(tags.get("XMP-postselect:Reasons")) == record["reasons"], name
        assert "XMP-photoshop:Urgency" not in tags, name
        if profile == "digikam":
            assert "XMP-xmp:Label" not in tags, name
            assert tags.get("XMP-digiKam:ColorLabel") == DIGIKAM_COLOR.get(label), name
            assert tags["XMP-digiKam:PickLabel"] == DIGIKAM_PICK[verdict], name
            tags_list = [k for k in _as_list(tags.get("XMP-digiKam:TagsList"))]
            # digiKam's tag paths use "/" all the way down: PostSelect/check/eyes.
            expected = [f"PostSelect/{k.replace('|', '/')}" for k in record["keywords"]]
            assert tags_list == expected, name
        else:
            assert tags.get("XMP-xmp:Label") == label, name
        if profile == "darktable":
            expected = [COLOR_INDEX[label]] if label in COLOR_INDEX else []
            assert _as_list(tags.get("XMP-darktable:Colorlabels")) == expected, name
        if profile == "photomechanic":
            assert tags.get("XMP-photomech:ColorClass") == PHOTOMECHANIC_CLASS.get(label), name


def test_exiftool_validates_every_sidecar_without_a_warning(scored):
    exiftool = need_tool("exiftool")
    _, _, records = scored
    out = subprocess.run(
        [exiftool, "-validate", "-warning", "-error", "-a", "-json"]
        + [str(_sidecar(r)) for r in records],
        capture_output=True,
        text=True,
        check=True,
    )
    for tags in json.loads(out.stdout):
        assert tags.get("Validate") == "OK", tags
        assert "Error" not in tags and "Warning" not in tags, tags


def _exiv2(path: Path, exiv2: str) -> dict[str, str]:
    out = subprocess.run([exiv2, "-pa", str(path)], capture_output=True, text=True, check=True)
    values: dict[str, str] = {}
    for line in out.stdout.splitlines():
        match = re.match(r"^(Xmp\.\S+)\s+\S+\s+\d+\s+(.*)$", line)
        if match:
            values[match.group(1)] = match.group(2).strip()
    return values


def test_exiv2_reads_what_the_json_reported(scored):
    exiv2 = need_tool("exiv2")
    profile, _, records = scored
    for record in records:
        tags = _exiv2(_sidecar(record), exiv2)
        name = Path(record["path"]).name
        label, verdict = record["label"], record["verdict"]
        assert tags["Xmp.xmp.Rating"] == str(record["rating"]), name
        ours = [f"PostSelect|{k}" for k in record["keywords"]]
        assert tags.get("Xmp.lr.hierarchicalSubject", "") == ", ".join(ours), name
        assert tags["Xmp.postselect.KeeperProbability"] == f"{record['keeper_probability']:.4f}"
        assert tags.get("Xmp.postselect.Reasons", "") == ", ".join(record["reasons"]), name
        assert "Xmp.photoshop.Urgency" not in tags
        if profile == "digikam":
            assert tags.get("Xmp.digiKam.ColorLabel") == _str(DIGIKAM_COLOR.get(label)), name
            assert tags["Xmp.digiKam.PickLabel"] == str(DIGIKAM_PICK[verdict]), name
        else:
            assert tags.get("Xmp.xmp.Label") == label, name
        if profile == "darktable":
            assert tags.get("Xmp.darktable.colorlabels") == _str(COLOR_INDEX.get(label)), name
        if profile == "photomechanic":
            assert tags.get("Xmp.photomechanic.ColorClass") == _str(
                PHOTOMECHANIC_CLASS.get(label)
            ), name


def _str(value) -> str | None:
    return None if value is None else str(value)
