"""`postselectd score` end to end: real NEFs, real models, real sidecars, real readers."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import (
    DATA,
    ROOT,
    copy_file,
    need_tool,
    phone_photo,
    real_photo,
    run_cli,
    shared_path,
)
from PIL import Image

from postselectd.sidecar import read_sidecar


def _fingerprints(folder: Path) -> dict[str, tuple[str, int]]:
    return {
        p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(folder.iterdir())
        if p.suffix.upper() == ".NEF"
    }


def _score_json(*args: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
    result = run_cli("score", "--json", *args)
    records = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return result, records


@pytest.fixture(scope="module")
def scored_shoot(tmp_path_factory) -> tuple[Path, list[dict], dict, subprocess.CompletedProcess]:
    """One real `score` run over a copy of the 13 sample NEFs, shared by the checks below."""
    source = shared_path("samples", "nef")
    folder = tmp_path_factory.mktemp("shoot")
    for nef in sorted(source.glob("*.NEF")):
        copy_file(nef, folder)
    # A Lightroom sidecar with develop settings next to one raw, before scoring.
    shutil.copy(DATA / "lightroom_sidecar.xmp", folder / "DSC_0104.xmp")
    before = _fingerprints(folder)
    result, records = _score_json(str(folder))
    return folder, records, before, result


def test_every_nef_gets_a_sidecar_and_a_json_record(scored_shoot):
    folder, records, _, result = scored_shoot
    assert result.returncode == 0, result.stderr
    assert len(records) == 13
    assert sorted(p.name for p in folder.glob("*.xmp")) == [
        f"DSC_{n:04d}.xmp" for n in range(101, 114)
    ]
    for record in records:
        assert set(record) >= {
            "path",
            "sidecar",
            "rating",
            "label",
            "keeper_probability",
            "reasons",
            "faces",
            "burst",
            "best_of_burst",
            "elapsed_ms",
            "error",
        }
        assert record["error"] is None
        assert 1 <= record["rating"] <= 5
        assert 0.0 <= record["keeper_probability"] <= 1.0
        assert record["sidecar"] == [str(Path(record["path"]).with_suffix(".xmp"))]


def test_summary_table_is_printed(scored_shoot):
    _, _, _, result = scored_shoot
    assert re.search(r"files\s+13", result.stderr)
    assert re.search(r"rated\s+13", result.stderr)
    assert "images/s" in result.stderr
    # One INFO line per file.
    assert len(re.findall(r"^DSC_\d{4}\.NEF: \d\* ", result.stderr, re.M)) == 13


def test_one_keeper_probability_in_sidecar_json_and_log(scored_shoot):
    # Issue #20: DSC_0110's sidecar said KeeperProbability 0.9961 and, in Probabilities,
    # keeper=0.064; the log called it "p". One number, one name, everywhere.
    folder, records, _, result = scored_shoot
    for record in records:
        name, p = Path(record["path"]).name, record["keeper_probability"]
        xmp = read_sidecar(folder / Path(name).with_suffix(".xmp").name)
        assert xmp["Xmp.postselect.KeeperProbability"] == f"{p:.4f}", name
        assert "keeper" not in xmp["Xmp.postselect.Probabilities"], name
        [line] = [x for x in result.stderr.splitlines() if x.startswith(f"{name}: ")]
        assert f" keeper_probability={p:.2f} " in line, line


def test_shown_keeper_probability_is_the_models_own_even_for_a_reject(scored_shoot):
    # DSC_0110: eyes closed, a sharp face (the head's blur was the background);
    # DSC_0111: a soft face, the head alone at 0.755. Both are rejects; neither number is
    # clamped or lowered for it: the reason says why the stars are fewer.
    from postselectd.stages import analyze_file

    folder, records, _, _ = scored_shoot
    by_name = {Path(r["path"]).name: r for r in records}
    for name, reason in (("DSC_0110.NEF", "eyes closed"), ("DSC_0111.NEF", "out of focus")):
        analysis = analyze_file(folder / name).analysis
        record = by_name[name]
        assert (record["verdict"], record["rating"], record["reasons"]) == ("reject", 1, [reason])
        assert record["keeper_probability"] == analysis.keeper_probability > 0.7, name
        judged = dict(analysis.judged_probabilities)
        assert judged["keeper"] == analysis.keeper_probability, name


def test_every_four_star_frame_is_a_green_select(scored_shoot):
    # DSC_0102 (the best of its burst, 3 stars + 1) had no label while DSC_0108 was Green.
    _, records, _, _ = scored_shoot
    by_name = {Path(r["path"]).name: r for r in records}
    assert by_name["DSC_0102.NEF"]["rating"] == by_name["DSC_0108.NEF"]["rating"] == 4
    for name, record in by_name.items():
        select = record["rating"] >= 4
        assert (record["label"] == "Green") == select == (record["verdict"] == "select"), name


def test_raws_are_byte_for_byte_untouched(scored_shoot):
    folder, _, before, _ = scored_shoot
    assert _fingerprints(folder) == before


def test_sharp_frames_outscore_blurred_ones(scored_shoot):
    _, records, _, _ = scored_shoot
    p = {Path(r["path"]).name: r["keeper_probability"] for r in records}
    assert p["DSC_0102.NEF"] > max(p["DSC_0101.NEF"], p["DSC_0103.NEF"])
    assert p["DSC_0104.NEF"] > max(p["DSC_0105.NEF"], p["DSC_0106.NEF"])


def test_exiftool_reads_rating_label_and_keywords(scored_shoot):
    exiftool = need_tool("exiftool")
    folder, records, _, _ = scored_shoot
    out = subprocess.run(
        [
            exiftool,
            "-json",
            "-XMP:Rating",
            "-XMP:Label",
            "-XMP-lr:HierarchicalSubject",
            "-XMP-dc:Subject",
            *sorted(str(p) for p in folder.glob("*.xmp")),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    read = {Path(r["SourceFile"]).stem: r for r in json.loads(out.stdout)}
    for record in records:
        stem = Path(record["path"]).stem
        assert read[stem]["Rating"] == record["rating"]
        assert read[stem].get("Label") == record["label"]
        hierarchical = read[stem].get("HierarchicalSubject", [])
        hierarchical = hierarchical if isinstance(hierarchical, list) else [hierarchical]
        ours = [k for k in hierarchical if k.startswith("PostSelect|")]
        expected = ["PostSelect|select"] if record["label"] == "Green" else []
        expected += ["PostSelect|reject"] if record["label"] == "Red" else []
        expected += [f"PostSelect|{r}" for r in record["reasons"]]
        expected += [f"PostSelect|check|{c}" for c in record["checks"]]
        if record["best_of_burst"]:
            expected.append("PostSelect|best of burst")
        if record["burst"] is not None:
            expected.append(f"PostSelect|burst {record['burst']:04d}")
        assert ours == expected, stem
        subjects = read[stem].get("Subject", [])
        subjects = subjects if isinstance(subjects, list) else [subjects]
        # dc:subject holds the leaves only, as Lightroom writes it.
        assert {k.rsplit("|", 1)[-1] for k in ours} <= set(subjects), stem
        assert not any("|" in k for k in subjects), stem


def test_exiftool_validates_every_sidecar(scored_shoot):
    exiftool = need_tool("exiftool")
    folder, _, _, _ = scored_shoot
    out = subprocess.run(
        [
            exiftool,
            "-validate",
            "-warning",
            "-error",
            "-a",
            "-json",
            *sorted(str(p) for p in folder.glob("*.xmp")),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    for record in json.loads(out.stdout):
        assert record.get("Validate") == "OK", record
        assert "Error" not in record and "Warning" not in record, record


def test_keywords_are_rdf_bags_in_the_file(scored_shoot):
    folder, _, _, _ = scored_shoot
    for sidecar in folder.glob("*.xmp"):
        text = sidecar.read_text()
        for prop in ("dc:subject", "lr:hierarchicalSubject"):
            if f"<{prop}>" in text:
                assert re.search(rf"<{prop}>\s*<rdf:Bag>", text), (sidecar.name, prop)


def test_lightroom_sidecar_keeps_every_property(scored_shoot):
    from postselectd.sidecar import read_sidecar

    folder, _, _, _ = scored_shoot
    original = folder.parent / "original.xmp"
    shutil.copy(DATA / "lightroom_sidecar.xmp", original)
    before = read_sidecar(original)
    after = read_sidecar(folder / "DSC_0104.xmp")
    for key, value in before.items():
        assert key in after, f"{key} lost"
        if key not in ("Xmp.dc.subject", "Xmp.lr.hierarchicalSubject"):
            assert after[key] == value, key
    assert after["Xmp.dc.subject"][:2] == ["wedding", "Anna"]
    assert after["Xmp.lr.hierarchicalSubject"][:2] == ["Events|wedding", "People|Anna"]
    assert "Xmp.xmp.Rating" in after


def test_a_person_rating_survives_the_next_run(tmp_path: Path):
    folder = tmp_path / "shoot"
    copy_file(shared_path("samples", "nef", "DSC_0102.NEF"), folder)
    result, [first] = _score_json(str(folder))
    assert result.returncode == 0, result.stderr
    sidecar = folder / "DSC_0102.xmp"
    text = sidecar.read_text()
    human = 2 if first["rating"] != 2 else 3
    sidecar.write_text(text.replace(f'xmp:Rating="{first["rating"]}"', f'xmp:Rating="{human}"'))
    result, [second] = _score_json(str(folder))
    assert result.returncode == 0
    assert f'xmp:Rating="{human}"' in sidecar.read_text()
    assert "kept the rating a person set" in result.stderr
    # --force is the only way past it.
    result, [third] = _score_json("--force", str(folder))
    assert f'xmp:Rating="{third["rating"]}"' in sidecar.read_text()
    assert third["rating"] != human or first["rating"] == human


def test_rerate_with_new_model_rates_again_only_what_another_model_rated(tmp_path: Path):
    """After the daemon learnt a new model: ``--rerate-with-new-model`` rates again the
    photos another model rated and those not rated yet; the ones the model in use rated
    already are left as they are, byte for byte."""
    other, same, new = (tmp_path / name for name in ("other", "same", "new"))
    copy_file(shared_path("samples", "nef", "DSC_0102.NEF"), other)
    copy_file(shared_path("samples", "nef", "DSC_0113.NEF"), same)
    result, first = _score_json(str(other), str(same))
    assert result.returncode == 0, result.stderr
    version = read_sidecar(same / "DSC_0113.xmp")["Xmp.postselect.ModelVersion"]
    old = other / "DSC_0102.xmp"  # as a model before the one in use wrote it
    text = old.read_text()
    assert f'postselect:ModelVersion="{version}"' in text
    old.write_text(text.replace(version, "personal-20260101-000000"))
    kept = (same / "DSC_0113.xmp").read_bytes()
    copy_file(shared_path("samples", "nef", "DSC_0103.NEF"), new)
    result, records = _score_json("--rerate-with-new-model", str(other), str(same), str(new))
    assert result.returncode == 0, result.stderr
    assert sorted(Path(r["path"]).name for r in records) == ["DSC_0102.NEF", "DSC_0103.NEF"]
    assert "1 of 3 photos already rated by" in result.stderr
    assert read_sidecar(old)["Xmp.postselect.ModelVersion"] == version
    assert read_sidecar(new / "DSC_0103.xmp")["Xmp.postselect.ModelVersion"] == version
    assert (same / "DSC_0113.xmp").read_bytes() == kept
    # Run again: nothing left to rate.
    result, records = _score_json("--rerate-with-new-model", str(other), str(same), str(new))
    assert (result.returncode, records) == (0, [])


def test_good_raws_all_get_a_rating(tmp_path: Path):
    folder = tmp_path / "good"
    for raw in sorted(shared_path("samples", "raw", "good").iterdir()):
        copy_file(raw, folder)
    result, records = _score_json(str(folder))
    assert result.returncode == 0, result.stderr
    assert len(records) == len(list(folder.iterdir())) - len(list(folder.glob("*.xmp")))
    assert all(r["error"] is None and r["rating"] for r in records)


def test_broken_raws_get_a_rating_or_one_line_error_and_the_run_finishes(tmp_path: Path):
    folder = tmp_path / "broken"
    for raw in sorted(shared_path("samples", "raw", "broken").iterdir()):
        copy_file(raw, folder)
    result, records = _score_json(str(folder))
    assert result.returncode == 1  # some files failed, each named
    assert len(records) == 17
    assert "Traceback" not in result.stderr
    for record in records:
        name = Path(record["path"]).name
        if record["error"]:
            assert record["rating"] is None and record["sidecar"] == []
            assert not Path(record["path"]).with_suffix(".xmp").exists()
            lines = [line for line in result.stderr.splitlines() if line.startswith(f"{name}: ")]
            assert len(lines) == 1 and record["error"] in lines[0]
        else:
            assert Path(record["sidecar"][0]).exists()
    rated = {Path(r["path"]).name for r in records if not r["error"]}
    assert "TRUNC_canon-1ds-mk3_CR2-head.CR2" in rated  # LibRaw refuses it; its JPEG survives
    assert "TRUNC_canon-r6_nom-exif.cr3" in rated


def test_a_cut_raw_is_rated_at_once_and_said_to_look_truncated(tmp_path: Path):
    # The daemon waits for the rest of such a file (issue #20); `score` was pointed at it.
    folder = tmp_path / "cut"
    folder.mkdir()
    data = shared_path("samples", "nef", "DSC_0113.NEF").read_bytes()
    (folder / "DSC_0113.NEF").write_bytes(data[:2_000_000])  # its JpgFromRaw is cut
    result, records = _score_json(str(folder))
    assert result.returncode == 0, result.stderr
    assert [(r["error"], r["preview_size"]) for r in records] == [(None, [1620, 1080])]
    assert (
        "DSC_0113.NEF: rated from a file that looks truncated: its SubIFD0 preview runs past "
        "the end of the file"
    ) in result.stderr.splitlines()


def test_a_raw_with_only_a_thumbnail_is_not_judged_but_marked_for_a_check(tmp_path: Path):
    # Issue #20: the trimmed CRW and RAF have nothing but a 160x120 thumbnail, which got
    # 4 stars Green at p=0.95.
    folder = tmp_path / "thumbs"
    names = ("TRIM_canon-powershot-s40_exiv2.crw", "TRIM_fuji-s5pro_exiftool_FujiFilm.raf")
    for name in names:
        copy_file(shared_path("samples", "raw", "broken", name), folder)
    result, records = _score_json(str(folder))
    assert result.returncode == 0, result.stderr
    assert sorted(Path(r["path"]).name for r in records) == sorted(names)
    for record in records:
        name = Path(record["path"]).name
        assert record["error"] is None
        assert (record["rating"], record["label"], record["verdict"]) == (0, None, ""), name
        assert record["preview_too_small"] is True and record["preview_size"] == [160, 120]
        assert record["checks"] == ["preview too small"]
        assert record["keywords"] == ["check|preview too small"]
        sidecar = read_sidecar(Path(record["sidecar"][0]))
        assert sidecar["Xmp.xmp.Rating"] == "0"
        assert "Xmp.xmp.Label" not in sidecar
        assert "PostSelect|check|preview too small" in str(sidecar["Xmp.lr.hierarchicalSubject"])
        lines = [line for line in result.stderr.splitlines() if line.startswith(f"{name}: ")]
        assert len(lines) == 1 and "not judged" in lines[0] and "160x120" in lines[0], lines
    assert re.search(r"not judged \(0\)\s+2", result.stderr)


def test_raw_and_jpeg_pair_gets_one_sidecar_from_the_raw(tmp_path: Path):
    folder = tmp_path / "pair"
    copy_file(shared_path("samples", "nef", "DSC_0102.NEF"), folder, "DSC_0001.NEF")
    copy_file(shared_path("eval", "blur", "blur-0001.jpg"), folder, "DSC_0001.JPG")
    result, records = _score_json(str(folder))
    assert result.returncode == 0, result.stderr
    assert [Path(r["path"]).name for r in records] == ["DSC_0001.NEF"]
    assert sorted(p.name for p in folder.iterdir()) == [
        "DSC_0001.JPG",
        "DSC_0001.NEF",
        "DSC_0001.xmp",
    ]


def test_darktable_profile_names_the_sidecar_after_the_raw(tmp_path: Path):
    folder = tmp_path / "dt"
    copy_file(shared_path("samples", "nef", "DSC_0102.NEF"), folder)
    config = tmp_path / "config.yaml"
    config.write_text("sidecar:\n  profiles: [lightroom, darktable]\n")
    result, [record] = _score_json("--config", str(config), str(folder))
    assert result.returncode == 0, result.stderr
    assert [Path(p).name for p in record["sidecar"]] == ["DSC_0102.xmp", "DSC_0102.NEF.xmp"]


def test_dry_run_writes_nothing(tmp_path: Path):
    folder = tmp_path / "dry"
    copy_file(shared_path("samples", "nef", "DSC_0102.NEF"), folder)
    result, [record] = _score_json("--dry-run", str(folder))
    assert result.returncode == 0 and record["rating"]
    assert [p.name for p in folder.iterdir()] == ["DSC_0102.NEF"]


def test_missing_path_is_a_usage_error(tmp_path: Path):
    result = run_cli("score", str(tmp_path / "nope"))
    assert result.returncode == 2
    assert "no such file or folder" in result.stderr


def test_sample_bursts_and_their_best_frames(scored_shoot):
    _, records, _, _ = scored_shoot
    by_name = {Path(r["path"]).name: r for r in records}
    burst_a = {by_name[f"DSC_{n:04d}.NEF"]["burst"] for n in (101, 102, 103)}
    burst_b = {by_name[f"DSC_{n:04d}.NEF"]["burst"] for n in (104, 105, 106)}
    assert len(burst_a) == 1 and None not in burst_a
    assert len(burst_b) == 1 and None not in burst_b and burst_a != burst_b
    best = sorted(name for name, r in by_name.items() if r["best_of_burst"])
    assert best == ["DSC_0102.NEF", "DSC_0104.NEF"]
    others = [r for name, r in by_name.items() if int(name[4:8]) > 106]
    assert all(r["burst"] is None for r in others)
    for name in best:
        assert by_name[name]["rating"] >= 3 and not by_name[name]["reasons"]


def test_json_into_a_closed_pipe_stops_quietly(tmp_path: Path):
    # `score --json | head -3`: the reader goes away; like any Unix tool, stop without a
    # traceback, with the status a shell gives a program SIGPIPE ended.
    folder = tmp_path / "piped"
    for n in (101, 102, 103):
        copy_file(shared_path("samples", "nef", f"DSC_{n:04d}.NEF"), folder)
    stderr_path = tmp_path / "stderr"
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "postselectd", "score", "--json", "--dry-run", str(folder)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            cwd=ROOT,
            env=dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "noconfig")),
        )
        process.stdout.close()  # gone before the first line (the models take a second)
        code = process.wait(timeout=300)
    err = stderr_path.read_text()
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception" not in err, err
    assert code == 141, err


def test_a_folder_without_photos_says_so_and_exits_3(tmp_path: Path):
    folder = tmp_path / "exports"
    folder.mkdir()
    photo = sorted(shared_path("eval", "natural").glob("*.png"))[0]
    Image.open(photo).save(folder / "IMG_0001.gif")  # a picture, but no camera's original
    (folder / "notes.txt").write_text("no photos here\n")
    result = run_cli("score", str(folder))
    assert result.returncode == 3, result.stderr
    assert result.stdout == ""  # no empty summary table
    assert f"no photos found in {folder} (looked for " in result.stderr
    assert ".NEF" in result.stderr and ".CR3" in result.stderr and ".HEIC" in result.stderr
    assert "passed over 1 .gif file, which postselectd does not rate" in result.stderr
    assert "3    no photos found" in run_cli("score", "--help").stdout


def test_a_folder_of_phone_web_and_raw_photos_and_a_video(tmp_path: Path):
    # Issue #19: HEIC (a portrait, stored turned), WebP, AVIF, PNG, TIFF, a WebP saved as
    # .jpg, the sample NEFs, real phone and web files and a real iPhone .MOV: every photo
    # rated, the video named, exit 1 for it.
    folder = tmp_path / "wedding"
    for nef in sorted(shared_path("samples", "nef").glob("*.NEF")):
        copy_file(nef, folder)
    portrait = real_photo("blur-0006.jpg").transpose(Image.Transpose.ROTATE_90)
    phone_photo(folder / "IMG_0001.HEIC", portrait, orientation=6)
    phone_photo(folder / "IMG_0002.webp", real_photo("blur-0009.jpg"), taken=None)
    phone_photo(folder / "IMG_0003.avif", real_photo("blur-0003.jpg"), camera=None)
    phone_photo(folder / "IMG_0004.png", real_photo("blur-0015.jpg"))
    phone_photo(folder / "IMG_0005.tif", real_photo("blur-0001.jpg"), camera=None)
    phone_photo(folder / "client.jpg", real_photo("blur-0004.jpg"), quality=85)  # a WebP
    formats = Path(__file__).parent / "data" / "formats"  # as phones and encoders wrote them
    shutil.copyfile(formats / "iphone-12-pro_greyhounds.heic", folder / "IMG_0101.HEIC")
    shutil.copyfile(formats / "link-u_fox.avif", folder / "fox.avif")
    shutil.copyfile(formats / "webp-gallery_3.webp", folder / "gallery.webp")
    shutil.copyfile(formats / "nom-exif_auth.mov", folder / "IMG_0006.MOV")
    config = tmp_path / "config.yaml"
    config.write_text("sidecar:\n  profiles: [lightroom, darktable]\n")
    result, records = _score_json("--config", str(config), str(folder))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    by_name = {Path(r["path"]).name: r for r in records}
    assert len(by_name) == 13 + 6 + 3 + 1
    failed = {name: r["error"] for name, r in by_name.items() if r["error"]}
    assert failed == {"IMG_0006.MOV": "a video file (QuickTime MOV), not a photo"}
    assert by_name["IMG_0006.MOV"]["sidecar"] == []
    assert "IMG_0006.MOV: a video file (QuickTime MOV), not a photo" in result.stderr
    for name, record in by_name.items():
        if name == "IMG_0006.MOV":
            continue
        assert record["rating"] is not None and not record["preview_too_small"], name
        stem, suffix = name.rsplit(".", 1)
        assert [Path(p).name for p in record["sidecar"]] == [f"{stem}.xmp", f"{name}.xmp"]
        assert read_sidecar(folder / f"{name}.xmp")["Xmp.xmp.Rating"] == str(record["rating"])
    assert by_name["IMG_0001.HEIC"]["preview_size"] == [768, 1024]  # upright, turned once
    assert by_name["IMG_0101.HEIC"]["preview_size"] == [1008, 1344]  # the iPhone's portrait
    assert "client.jpg: file is a WebP named .jpg" in result.stderr
    assert re.search(r"failed\s+1\n", result.stderr)
