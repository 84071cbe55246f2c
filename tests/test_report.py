"""`postselectd report`: the contact sheet, read as a photographer's browser reads it.

The browser tests drive Debian's real headless Chromium over the DevTools protocol on a
pipe (--remote-debugging-pipe: no port, no websocket, no extra package), so what they
check is what a person sees: no console errors, no request outside the page's own files,
13 thumbnails, the bursts, the filters, the keyboard. Screenshots land in artifacts/.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import re
import select
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from conftest import ROOT, run_cli, shared_path

from postselectd.report import (
    FaceNumbers,
    Frame,
    Picture,
    Verdict,
    _csp_hash,
    images_dir_for,
    render_page,
    verdict_from_sidecar,
)

ARTIFACTS = ROOT / "artifacts"
# What the sample NEFs' README says a culler should find (and `score` does: test_score.py).
BURSTS = {
    "0101": ("DSC_0101.NEF", "DSC_0102.NEF", "DSC_0103.NEF"),
    "0104": ("DSC_0104.NEF", "DSC_0105.NEF", "DSC_0106.NEF"),
}
BEST = {"0101": "DSC_0102.NEF", "0104": "DSC_0104.NEF"}


# --- what the page says, without a browser ---------------------------------------------


def _sidecar(**extra: object) -> dict[str, object]:
    xmp: dict[str, object] = {
        "Xmp.xmp.Rating": "1",
        "Xmp.xmp.Label": "Red",
        "Xmp.postselect.WrittenRating": "1",
        "Xmp.postselect.WrittenLabel": "Red",
        "Xmp.postselect.KeeperProbability": "0.4500",
        "Xmp.postselect.Reasons": ["motion blur"],
        "Xmp.postselect.BurstId": "0101",
        "Xmp.postselect.BurstSize": "3",
        "Xmp.postselect.MeanLuminance": "135.9",
        "Xmp.postselect.ClippedHighlights": "0.0057",
        "Xmp.lr.hierarchicalSubject": ["PostSelect|reject", "PostSelect|motion blur", "Trip"],
    }
    xmp.update(extra)
    return xmp


def test_verdict_is_what_the_sidecar_says() -> None:
    v = verdict_from_sidecar(_sidecar())
    assert (v.rated, v.stars, v.label, v.color, v.verdict) == (True, 1, "Red", "red", "reject")
    assert v.reasons == ("motion blur",)
    assert (v.burst_id, v.burst_size, v.best_of_burst) == ("0101", 3, False)
    assert v.keeper_probability == pytest.approx(0.45)
    assert ("Clipped highlights", "0.57 % of pixels") in v.numbers
    assert not v.rating_by_person


def test_the_detail_view_shows_one_keeper_probability() -> None:
    # Issue #20: DSC_0110 (eyes closed) showed "Keeper probability" and, among the class
    # probabilities, the head's whole-frame "keeper 0.064": two keeper numbers for a frame.
    v = verdict_from_sidecar(
        _sidecar(
            **{
                "Xmp.postselect.KeeperProbability": "0.9961",
                "Xmp.postselect.Reasons": ["eyes closed"],
                "Xmp.postselect.Probabilities": "keeper=0.064 out of focus=0.804 "
                "motion blur=0.128 overexposed=0.003 underexposed=0.001",
            }
        )
    )
    rows = dict(v.numbers)
    assert rows["Keeper probability"] == "1.00" and v.keeper_probability == pytest.approx(0.9961)
    assert "keeper" not in rows["Class probabilities"]
    assert rows["Class probabilities"].startswith("out of focus 0.804")
    assert [what for what, value in v.numbers if "keeper" in f"{what} {value}".lower()] == [
        "Keeper probability"
    ]


def test_a_rating_a_person_changed_shows_as_theirs() -> None:
    v = verdict_from_sidecar(_sidecar(**{"Xmp.xmp.Rating": "4"}))
    assert v.stars == 4 and v.rating_by_person
    # The person's verdict wins whole, also before postselectd rates the frame again:
    # not a reject, its reasons only among the numbers.
    assert v.overruled and v.verdict == "" and v.reasons == ()
    assert ("Reasons", "motion blur (overruled)") in v.numbers


def test_a_label_a_person_set_overrules_too() -> None:
    v = verdict_from_sidecar(_sidecar(**{"Xmp.xmp.Label": "Green"}))
    assert v.overruled and v.verdict == "" and not v.rating_by_person
    assert (v.stars, v.label) == (1, "Green")


def test_lightroom_rejected_counts_as_a_reject() -> None:
    v = verdict_from_sidecar({"Xmp.xmp.Rating": "-1"})
    assert v.verdict == "reject" and v.stars == -1


def test_digikam_sidecar_gives_its_color_and_keywords() -> None:
    v = verdict_from_sidecar(
        {
            "Xmp.xmp.Rating": "4",
            "Xmp.digiKam.ColorLabel": "4",
            "Xmp.postselect.WrittenRating": "4",
            "Xmp.postselect.WrittenColorLabel": "4",
            "Xmp.digiKam.TagsList": ["PostSelect/select", "PostSelect/best of burst"],
            "Xmp.postselect.KeeperProbability": "0.93",
        }
    )
    assert (v.verdict, v.color, v.label, v.best_of_burst) == ("select", "green", "Green", True)


@pytest.mark.parametrize(
    "numbers, color",
    [
        ({"Xmp.digiKam.ColorLabel": "2"}, "orange"),
        ({"Xmp.photomechanic.ColorClass": "4"}, "green"),
        ({"Xmp.photomechanic.ColorClass": "0"}, None),  # Photo Mechanic's "no class"
    ],
)
def test_a_color_set_only_as_a_number_shows_as_train_reads_it(numbers, color) -> None:
    """digiKam's orange (2) and a Photo Mechanic color class with no xmp:Label: the page
    shows the color train learns from (dialects' tables), not a frame without a label."""
    v = verdict_from_sidecar({"Xmp.xmp.Rating": "3", **numbers})
    assert (v.color, v.label) == (color, color.capitalize() if color else None)


def test_a_sidecar_of_another_tool_is_not_rated() -> None:
    v = verdict_from_sidecar({"Xmp.xmp.Rating": "3", "Xmp.dc.subject": ["Trip"]})
    assert not v.rated and v.stars == 3


def test_faces_keep_their_boxes_and_eyes() -> None:
    v = verdict_from_sidecar(
        _sidecar(
            **{
                "Xmp.postselect.Faces": "2",
                "Xmp.postselect.PreviewSize": "1620x1080",
                "Xmp.postselect.FaceBoxes": "899,575,153,175; 10,20,30,40",
                "Xmp.postselect.EyeOpenness": "0.30/0.31; -",
                "Xmp.postselect.FaceSharpness": "0.79; 0.28",
            }
        )
    )
    assert v.preview_size == (1620, 1080)
    assert v.faces == (
        FaceNumbers((899, 575, 153, 175), "0.30/0.31", "0.79"),
        FaceNumbers((10, 20, 30, 40), "-", "0.28"),
    )


def test_page_escapes_names_and_allows_only_its_own_script() -> None:
    name = '<img src=x onerror="alert(1)">.NEF'
    frame = Frame(
        index=1,
        path=Path("/shoot") / name,
        verdict=verdict_from_sidecar(_sidecar()),
        thumb=Picture(320, 213, src="r_files/thumb/00001.jpg"),
        large=Picture(1024, 683, src="r_files/large/00001.jpg"),
    )
    page = render_page([frame], title="shoot")
    assert name not in page and html_escaped(name) in page
    script = re.search(r"<script>(.*)</script>", page, re.S)[1]
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page)[1]
    assert "default-src 'none'" in csp
    assert _csp_hash(script) in csp
    assert "http://" not in page.replace("http://www.w3.org", "") and "https://" not in page


def html_escaped(text: str) -> str:
    import html

    return html.escape(text)


def test_alt_text_names_the_file_and_the_verdict() -> None:
    frame = Frame(
        index=1,
        path=Path("/s/DSC_0101.NEF"),
        verdict=verdict_from_sidecar(_sidecar()),
        thumb=Picture(320, 213, src="t.jpg"),
    )
    page = render_page([frame], title="s")
    assert (
        'alt="DSC_0101.NEF: reject (motion blur), 1 star, label Red, keeper probability 0.45"'
        in page
    )


def test_a_check_says_what_to_look_at_beside_the_keeper_probability() -> None:
    # DSC_0112: p 0.71 would be 3 stars; a doubtful exposure makes it 2 and a check. The
    # page said "keep" and no reason: nothing told why the stars were fewer.
    xmp = {
        "Xmp.xmp.Rating": "2",
        "Xmp.postselect.WrittenRating": "2",
        "Xmp.postselect.KeeperProbability": "0.7117",
        "Xmp.postselect.Check": "exposure",
        "Xmp.lr.hierarchicalSubject": ["PostSelect|check|exposure"],
    }
    frame = Frame(index=1, path=Path("/s/DSC_0112.NEF"), verdict=verdict_from_sidecar(xmp))
    assert frame.verdict.checks == ("exposure",) and frame.verdict.verdict == ""
    page = render_page([frame], title="s")
    assert "DSC_0112.NEF: check (exposure), 2 stars, keeper probability 0.71" in page
    assert "check exposure</span>" in page
    assert 'data-verdict="keep"' in page  # neither a select nor a reject for the filters


def test_thumbnails_never_land_visibly_in_a_shoot(tmp_path: Path) -> None:
    shoot = tmp_path / "shoot"
    shoot.mkdir()
    # Inside a shoot (or a watched folder): hidden, so score, the daemon and the next
    # report skip them. Elsewhere: a plain folder beside the page.
    assert images_dir_for(shoot / "report.html", [shoot]).name == ".report_files"
    assert images_dir_for(tmp_path / "report.html", [shoot]).name == "report_files"


def test_sidecars_are_found_under_any_editor_naming(tmp_path: Path) -> None:
    from postselectd.report import _folder_listing, _sidecar_candidates

    for name in ("A.NEF", "A.XMP", "B.NEF", "B.NEF.xmp", "C.NEF"):
        (tmp_path / name).write_bytes(b"")
    listing = _folder_listing(tmp_path)
    found = {
        photo: [p.name for p in _sidecar_candidates(tmp_path / photo, ["lightroom"], listing)]
        for photo in ("A.NEF", "B.NEF", "C.NEF")
    }
    assert found == {"A.NEF": ["A.XMP"], "B.NEF": ["B.NEF.xmp"], "C.NEF": []}


def test_a_tree_of_shoots_gets_a_section_per_shoot(tmp_path: Path) -> None:
    frames = [
        Frame(
            index=i,
            path=tmp_path / shoot / f"DSC_{i:04d}.NEF",
            verdict=verdict_from_sidecar(_sidecar(**{"Xmp.postselect.BurstId": None})),
        )
        for i, shoot in enumerate(["day 1", "day 1", "day 2"], 1)
    ]
    page = render_page(frames, title="trip", roots=[tmp_path])
    headings = re.findall(r'<section class="folder" aria-label="([^"]+)"><h2>', page)
    assert headings == [f"{tmp_path.name}/day 1", f"{tmp_path.name}/day 2"]


def test_unrated_photos_show_why(tmp_path: Path) -> None:
    frame = Frame(
        index=1,
        path=tmp_path / "DSC_0001.NEF",
        verdict=Verdict(rated=False, stars=None, label=None, color=None, verdict=""),
        problem="no preview: x",
    )
    page = render_page([frame], title="t")
    assert "no preview: x" in page and 'data-verdict="unrated"' in page


# --- the command, on the real sample shoot ------------------------------------------------


@pytest.fixture(scope="module")
def scored_shoot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of ../shared/samples/nef, rated by `postselectd score` as a user would."""
    source = shared_path("samples", "nef")
    shoot = tmp_path_factory.mktemp("report") / "2026-05-01 shoot"
    shoot.mkdir()
    for nef in sorted(source.glob("*.NEF")):
        shutil.copy(nef, shoot / nef.name)
    done = run_cli("score", str(shoot))
    assert done.returncode == 0, done.stderr
    return shoot


def _report(shoot: Path, output: Path, *extra: str) -> subprocess.CompletedProcess:
    done = run_cli(
        "report",
        str(shoot),
        "-o",
        str(output),
        *extra,
        env={"XDG_DATA_HOME": str(output.parent / "no-journal")},
    )
    assert done.returncode == 0, done.stderr
    return done


def test_report_lists_every_frame_with_its_verdict(scored_shoot: Path, tmp_path: Path) -> None:
    started = time.perf_counter()
    done = _report(scored_shoot, tmp_path / "report.html")
    seconds = time.perf_counter() - started
    print(f"report of 13 frames: {seconds:.1f} s (command line, with start-up)")
    # DSC_0112 (a dim frame, the histogram alone against it) asks for a check, no reject.
    # DSC_0102, the best of its burst at 4 stars, is a select like DSC_0104 and 0108.
    assert "13 photos, 3 selects, 7 rejects" in done.stdout
    page = (tmp_path / "report.html").read_text()
    assert len(re.findall(r'<li class="card ', page)) == 13
    assert len(list((tmp_path / "report_files" / "thumb").glob("*.jpg"))) == 13
    assert len(list((tmp_path / "report_files" / "large").glob("*.jpg"))) == 13
    names = re.findall(r'<span class="name">([^<]+)</span>', page)
    assert names == sorted(names)  # capture order is name order in this shoot


def test_report_of_an_unrated_folder_says_not_rated(tmp_path: Path) -> None:
    shoot = tmp_path / "fresh"
    shoot.mkdir()
    shutil.copy(shared_path("samples", "nef", "DSC_0113.NEF"), shoot)
    done = _report(shoot, tmp_path / "r.html")
    assert "1 photos, 0 selects, 0 rejects, 1 not rated" in done.stdout


def test_daemon_journal_adds_failures_and_time_taken(scored_shoot: Path, tmp_path: Path) -> None:
    from postselectd.report import build_report, journal_entries, photos_to_show
    from postselectd.state import Journal, Signature

    shoot = tmp_path / "shoot"
    shutil.copytree(scored_shoot, shoot)
    broken = shoot / "DSC_0200.NEF"
    broken.write_bytes(b"II*\0" + bytes(100))  # what a card read error leaves
    now = time.time()
    with Journal(tmp_path / "state") as journal:
        for photo in sorted(shoot.glob("*.NEF")):
            journal.touch(photo, Signature.of(photo.stat()), now, 0)
            if photo == broken:
                journal.attempt_failed(photo, "no preview", now, max_retries=0, backoff=1)
            else:
                journal.rated(photo, stars=1, label=None, result=None, elapsed_ms=150, now=now)
    report = build_report(
        [shoot],
        tmp_path / "r.html",
        photos=photos_to_show([shoot], ["lightroom"]),
        journal=journal_entries(tmp_path / "state"),
    )
    page = (tmp_path / "r.html").read_text()
    assert len(report.frames) == 14
    assert "DSC_0200.NEF: could not be rated: no preview" in page
    assert "<dt>Not rated</dt><dd>1</dd>" in page
    assert re.search(r"<dt>Time taken</dt><dd>[0-9.]+ s of analysis, 150 ms a frame", page)


def crashing_worker(worker_id, tasks, results, body):
    """A report worker that crashes on photos named *crash* (as LibRaw may on a damaged
    raw), else works normally. Fault injection only: workers._worker_main does the rest."""
    from postselectd import workers

    real_tasks_recv = tasks.recv

    def recv():
        task = real_tasks_recv()
        if task is not None and "crash" in task[1].path.name:
            os.kill(os.getpid(), signal.SIGSEGV)
        return task

    tasks.recv = recv
    workers._worker_main(worker_id, tasks, results, body)


def test_a_decoder_crash_costs_one_card_its_thumbnail_not_the_report(
    scored_shoot: Path, tmp_path: Path
) -> None:
    from postselectd.report import build_report, photos_to_show

    shoot = tmp_path / "shoot"
    shutil.copytree(scored_shoot, shoot)
    for suffix in (".NEF", ".xmp"):
        (shoot / f"DSC_0107{suffix}").rename(shoot / f"DSC_0107_crash{suffix}")
    photos = photos_to_show([shoot], ["lightroom"])
    assert len(photos) >= 8  # enough for the worker processes, where a crash can happen
    report = build_report(
        [shoot],
        tmp_path / "r.html",
        photos=photos,
        workers=2,
        worker_target=crashing_worker,
    )
    page = (tmp_path / "r.html").read_text()
    crashed = next(f for f in report.frames if f.name == "DSC_0107_crash.NEF")
    assert crashed.thumb is None and "decoder crashed" in (crashed.problem or "")
    others = [f for f in report.frames if f is not crashed]
    assert len(others) == 12
    for frame in others:
        assert frame.thumb and (tmp_path / frame.thumb.src).is_file(), frame.name
        assert frame.verdict.rated, frame.name
    cards = {
        name: picture
        for picture, name in re.findall(
            r'<a class="thumb" href="#f\d+">(.*?)</a><div class="meta"><span class="name">'
            r"([^<]+)</span>",
            page,
        )
    }
    assert len(cards) == 13
    assert "no preview" in cards["DSC_0107_crash.NEF"]
    assert all("<img " in cards[f.name] for f in others)
    assert "DSC_0107_crash.NEF: the decoder crashed on this file" in page


def test_report_of_a_missing_folder_is_a_usage_error(tmp_path: Path) -> None:
    done = run_cli("report", str(tmp_path / "nope"), "-o", str(tmp_path / "r.html"))
    assert done.returncode == 2 and "no such file or folder" in done.stderr


# --- in a real browser ------------------------------------------------------------------


class Browser:
    """Headless Chromium driven over --remote-debugging-pipe (CDP on fds 3 and 4)."""

    FLAGS = (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--remote-debugging-pipe",
        "--hide-scrollbars",
        "--mute-audio",
    )

    def __init__(self, executable: str, profile: Path):
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        # The child's ends move above 9, then onto 3 and 4 in the child; 3 and 4 are held
        # here meanwhile, so subprocess's own error pipe cannot be given those numbers.
        child = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_chrome_r, from_chrome_w)]
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        placeholders = [os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC) for _ in range(2)]

        def onto_3_and_4() -> None:
            os.dup2(child[0], 3)
            os.dup2(child[1], 4)

        self.log = tempfile.TemporaryFile()
        try:
            self.proc = subprocess.Popen(
                [executable, *self.FLAGS, f"--user-data-dir={profile}", "about:blank"],
                stdin=subprocess.DEVNULL,
                stdout=self.log,
                stderr=self.log,
                close_fds=False,
                preexec_fn=onto_3_and_4,
            )
        finally:
            for fd in child + placeholders:
                os.close(fd)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_chrome)
        os.close(self._from_chrome)

    def _receive(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_chrome], [], [], left)[0]:
                raise TimeoutError("no answer from Chromium")
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                self.log.seek(0)
                raise RuntimeError("Chromium exited: " + self.log.read().decode()[-2000:])
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def call(
        self,
        method: str,
        params: dict | None = None,
        session: str | None = None,
        timeout: float = 30,
    ) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        data = json.dumps(message).encode() + b"\0"
        while data:
            data = data[os.write(self._to_chrome, data) :]
        while True:
            answer = self._receive(timeout)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})
            self.events.append(answer)

    def wait_for(self, method: str, timeout: float = 30) -> dict:
        for i, event in enumerate(self.events):
            if event.get("method") == method:
                return self.events.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            event = self._receive(max(0.01, deadline - time.monotonic()))
            if event.get("method") == method:
                return event
            self.events.append(event)


class Page:
    """One tab: navigate, evaluate, press keys, take screenshots; records what it sees."""

    def __init__(self, browser: Browser, width: int = 1280, height: int = 900):
        self.browser = browser
        target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = browser.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        self.seen: list[dict] = []
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )

    def call(self, method: str, params: dict | None = None) -> dict:
        return self.browser.call(method, params, session=self.session)

    def goto(self, url: str) -> None:
        self.browser.events.clear()
        self.call("Page.navigate", {"url": url})
        self.browser.wait_for("Page.loadEventFired")

    def js(self, expression: str):
        result = self.call(
            "Runtime.evaluate",
            {
                "expression": expression,
                "returnByValue": True,
                "awaitPromise": True,
            },
        )
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def key(self, key: str, code: int) -> None:
        for kind in ("rawKeyDown", "keyUp"):
            self.call(
                "Input.dispatchKeyEvent",
                {"type": kind, "key": key, "code": key, "windowsVirtualKeyCode": code},
            )

    def settle(self) -> None:
        """Every image the page shows has loaded (lazy ones once they are in view)."""
        self.js("""Promise.race([new Promise(r => setTimeout(r, 10000)), Promise.all(
            Array.from(document.images).filter(i => i.offsetParent !== null
            && i.getBoundingClientRect().top < innerHeight)
            .map(i => i.decode().catch(() => 0)))])""")
        self.js("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")

    def screenshot(self, path: Path) -> None:
        self.settle()
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))

    def problems(self) -> list[str]:
        """Console errors, uncaught exceptions and CSP reports seen so far."""
        out = []
        for event in self.browser.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                out.append(str(params["exceptionDetails"]))
            elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                out.append(str(params["args"]))
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                out.append(params["entry"]["text"])
        return out

    def requests(self) -> list[str]:
        return [
            e["params"]["request"]["url"]
            for e in self.browser.events
            if e.get("method") == "Network.requestWillBeSent"
        ]


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if not executable:
        pytest.skip("chromium is not installed (apt-get install chromium; .ci/run does)")
    started = time.perf_counter()
    chrome = Browser(executable, tmp_path_factory.mktemp("chromium-profile"))
    chrome.call("Browser.getVersion")
    print(f"chromium started in {time.perf_counter() - started:.1f} s")
    yield chrome
    chrome.close()


CARDS_SHOWN = "Array.from(document.querySelectorAll('.card')).filter(c => c.offsetParent)"


@pytest.mark.slow
def test_contact_sheet_in_headless_chromium(scored_shoot: Path, tmp_path: Path, browser) -> None:
    report = tmp_path / "out" / "report.html"
    _report(scored_shoot, report)
    page = Page(browser, 1280, 1240)  # the summary and the first rows, both bursts
    page.goto(report.as_uri())
    page.screenshot(ARTIFACTS / "report.png")

    # 13 thumbnails, alt text with the file name and the verdict.
    alts = page.js("Array.from(document.querySelectorAll('.card img')).map(i => i.alt)")
    assert len(alts) == 13
    assert alts[0].startswith("DSC_0101.NEF: reject (motion blur), 1 star, label Red")
    assert page.js(f"{CARDS_SHOWN}.length") == 13

    # The two bursts: their frames in one group each, the best frame marked.
    bursts = page.js("""Object.fromEntries(Array.from(document.querySelectorAll('.burst')).map(b =>
        [b.dataset.burst, {frames: Array.from(b.querySelectorAll('.card .name')).map(n =>
        n.textContent), best: Array.from(b.querySelectorAll('.card.best .name')).map(n =>
        n.textContent)}]))""")
    assert {k: tuple(v["frames"]) for k, v in bursts.items()} == BURSTS
    assert {k: v["best"] for k, v in bursts.items()} == {k: [v] for k, v in BEST.items()}
    assert page.js("document.querySelector('.card.best .bestmark').offsetParent !== null")

    # "Rejects only" leaves exactly the frames whose sidecars say reject.
    rejected = sorted(
        p.with_suffix(".NEF").name
        for p in scored_shoot.glob("*.xmp")
        if "PostSelect|reject" in p.read_text()
    )
    # 8 before #14; the dim DSC_0112 is now a "check" (exposure), not a reject.
    assert len(rejected) == 7
    page.js("document.getElementById('show-reject').click()")
    shown = page.js(f"{CARDS_SHOWN}.map(c => c.querySelector('.name').textContent)")
    assert sorted(shown) == rejected
    assert page.js("document.getElementById('shown').textContent") == "Showing 7 of 13 photos"
    page.screenshot(ARTIFACTS / "report-rejects.png")
    page.js("document.getElementById('show-select').click()")
    assert sorted(page.js(f"{CARDS_SHOWN}.map(c => c.querySelector('.name').textContent)")) == [
        "DSC_0102.NEF",
        "DSC_0104.NEF",
        "DSC_0108.NEF",
    ]
    page.js("document.getElementById('show-all').click()")
    page.js("document.getElementById('reason-eyes-closed').click()")  # a reason unticked
    shown = page.js(f"{CARDS_SHOWN}.map(c => c.querySelector('.name').textContent)")
    assert "DSC_0109.NEF" not in shown and "DSC_0110.NEF" not in shown
    assert "DSC_0101.NEF" in shown and len(shown) == 11  # the other reasons stay
    page.js("document.querySelector('#filters button[type=reset]').click()")
    page.js("new Promise(r => setTimeout(r, 50))")
    assert page.js(f"{CARDS_SHOWN}.length") == 13

    # Keyboard: arrows move between photos, Enter opens one, arrows step, Escape closes.
    page.js("document.querySelector('.card .thumb').focus()")
    page.key("ArrowRight", 39)
    assert page.js("document.activeElement.closest('.card').id") == "c2"
    page.key("Enter", 13)
    page.js("new Promise(r => setTimeout(r, 50))")
    assert page.js("location.hash") == "#f2"
    assert page.js("document.activeElement.id") == "h2"
    assert page.js("document.getElementById('sheet').inert")  # Tab stays in the view
    page.key("ArrowRight", 39)
    page.js("new Promise(r => setTimeout(r, 50))")
    assert page.js("location.hash") == "#f3"
    page.key("Escape", 27)
    page.js("new Promise(r => setTimeout(r, 50))")
    assert page.js("document.activeElement.closest('.card').id") == "c3"
    assert not page.js("document.getElementById('sheet').inert")

    # The larger view of the group photo: its numbers and its face boxes.
    number = page.js("""Array.from(document.querySelectorAll('.card')).find(c =>
        c.querySelector('.name').textContent === 'DSC_0107.NEF').id.slice(1)""")
    page.js(f"location.hash = '#f{number}'")
    page.js("new Promise(r => setTimeout(r, 100))")
    view = page.js("""(() => { const d = document.querySelector('.detail:target');
        return {boxes: d.querySelectorAll('.boxes rect').length,
                rows: d.querySelectorAll('.faces tbody tr').length,
                text: d.querySelector('.nums').textContent}; })()""")
    assert view["boxes"] == view["rows"] == 6
    for what in ("Keeper probability", "Subject sharpness", "Mean luminance", "Clipped highlights"):
        assert what in view["text"]
    page.screenshot(ARTIFACTS / "report-detail.png")

    # Dark mode reads too (kept as an artifact to look at).
    page.js("location.hash = ''")
    page.call(
        "Emulation.setEmulatedMedia",
        {"features": [{"name": "prefers-color-scheme", "value": "dark"}]},
    )
    page.screenshot(ARTIFACTS / "report-dark.png")
    page.js("window.scrollTo(0, document.body.scrollHeight)")
    page.settle()

    assert page.problems() == []
    outside = [
        u
        for u in page.requests()
        if not (
            u == report.as_uri()
            or u.startswith("data:")
            or u.startswith((report.parent / "report_files").as_uri() + "/")
        )
    ]
    assert outside == []
    loaded = [u for u in page.requests() if "/report_files/thumb/" in u]
    assert len(loaded) == 13  # every thumbnail came from the page's own folder


@pytest.mark.slow
def test_embedded_contact_sheet_requests_nothing_but_itself(
    scored_shoot: Path, tmp_path: Path, browser
) -> None:
    report = tmp_path / "one-file.html"
    _report(scored_shoot, report, "--embed")
    assert not (tmp_path / "one-file_files").exists()
    page = Page(browser)
    page.goto(report.as_uri())
    page.js("window.scrollTo(0, document.body.scrollHeight)")
    page.settle()
    assert page.js(f"{CARDS_SHOWN}.length") == 13
    assert page.problems() == []
    assert [u for u in page.requests() if not u.startswith("data:")] == [report.as_uri()]


@pytest.mark.slow
def test_contact_sheet_without_javascript_is_a_plain_grid(
    scored_shoot: Path, tmp_path: Path, browser
) -> None:
    report = tmp_path / "report.html"
    _report(scored_shoot, report)
    page = Page(browser)
    page.call("Emulation.setScriptExecutionDisabled", {"value": True})
    page.goto(report.as_uri())
    page.call("Emulation.setScriptExecutionDisabled", {"value": False})  # to look, not to act
    assert page.js(f"{CARDS_SHOWN}.length") == 13
    assert page.js("document.getElementById('filters').offsetParent") is None  # needs script
    page.call("Emulation.setScriptExecutionDisabled", {"value": True})
    page.goto("about:blank")
    page.goto(report.as_uri() + "#f2")  # a click on a thumbnail opens its larger view
    page.call("Emulation.setScriptExecutionDisabled", {"value": False})
    assert page.js("document.querySelector('.detail:target h2').textContent").startswith(
        "DSC_0102.NEF"
    )
    assert page.problems() == []
