"""The page itself: one static HTML file, readable without a server, network or script.

Without JavaScript it is a plain grid whose frames open (CSS ``:target``) into a larger
view with the numbers; with it, filters and keyboard navigation come on. Styles and
script are package files (``report.css``, ``report.js`` beside this module), inlined and
pinned by hash in the page's CSP, so the page cannot load anything from anywhere even if
a file name tried to inject markup.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path

from postselectd.dialects import REJECT, SELECT
from postselectd.report.frames import Frame, Picture
from postselectd.report.verdicts import Verdict, _parse_time

_STAR_WORDS = {-1: "rejected", 0: "no stars", 1: "1 star"}


def stars_text(stars: int | None) -> str:
    if stars is None:
        return "no rating"
    return _STAR_WORDS.get(stars, f"{stars} stars")


def verdict_text(frame: Frame) -> str:
    """Short words for the verdict, as in alt text: 'reject (motion blur)'."""
    v = frame.verdict
    if not v.rated:
        return frame.problem or "not rated"
    if v.overruled:
        return "set by a person" + (" (reject)" if v.verdict == REJECT else "")
    words = {SELECT: "select", REJECT: "reject"}.get(v.verdict, "check" if v.checks else "keep")
    if v.reasons or v.checks:
        # Why the stars say less than the keeper probability would.
        words += f" ({', '.join(v.reasons or v.checks)})"
    return words


def alt_text(frame: Frame) -> str:
    v = frame.verdict
    parts = [f"{frame.name}: {verdict_text(frame)}"]
    if v.rated:
        parts.append(stars_text(v.stars))
        if v.label:
            parts.append(f"label {v.label}")
        if v.keeper_probability is not None:
            parts.append(f"keeper probability {v.keeper_probability:.2f}")
        if v.best_of_burst:
            parts.append("best of burst")
    return ", ".join(parts)


def _asset(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def render_page(
    frames: Sequence[Frame], *, title: str, roots: Sequence[Path] = (), seconds: float = 0.0
) -> str:
    """The whole page as text: pure, so tests can read it without a browser."""
    css, js = _asset("report.css"), _asset("report.js")
    e = html.escape
    csp = (
        "default-src 'none'; img-src 'self' data:; "
        f"style-src {_csp_hash(css)}; script-src {_csp_hash(js)}; "
        "base-uri 'none'; form-action 'none'"
    )
    folders: dict[Path, list[Frame]] = {}
    for frame in frames:
        folders.setdefault(frame.path.parent, []).append(frame)
    body = [_summary(frames, seconds), _filters(frames)]
    body.append('<div id="sheet" class="sheets">')
    for folder, items in folders.items():
        body.append(_folder_section(folder, items, roots, several=len(folders) > 1))
    body.append('</div><div class="details">')
    # Previous / next follow the page order, across folders.
    for i, frame in enumerate(frames):
        before = frames[i - 1] if i > 0 else None
        after = frames[i + 1] if i + 1 < len(frames) else None
        body.append(_detail(frame, before, after))
    body.append("</div>")
    generated = datetime.now(timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M")
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{e(csp, quote=False)}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<meta name="generator" content="postselectd report">
<title>{e(title)} — postselectd contact sheet</title>
<style>{css}</style>
</head>
<body>
<a class="skip" href="#sheet">Skip to the photos</a>
<header class="top">
<h1>{e(title)} <span class="sub">contact sheet</span></h1>
<p class="made">Made by postselectd on {e(generated)} from the sidecars{_journal_note(frames)}.
Select a photo for the numbers behind its verdict.</p>
</header>
<main id="main">
{"".join(body)}
</main>
<script>{js}</script>
</body>
</html>
"""


def _journal_note(frames: Sequence[Frame]) -> str:
    return " and the daemon's journal" if any(f.journal_status for f in frames) else ""


def _summary(frames: Sequence[Frame], seconds: float) -> str:
    e = html.escape
    rated = [f for f in frames if f.verdict.rated]
    selects = sum(f.is_select for f in frames)
    rejects = [f for f in frames if f.is_reject]
    bursts = {(f.path.parent, f.verdict.burst_id) for f in frames if f.verdict.burst_id}
    in_bursts = sum(1 for f in frames if f.verdict.burst_id)
    reasons = Counter(r for f in rejects for r in f.verdict.reasons)
    stars = Counter(f.verdict.stars for f in rated)
    figures = [
        ("Frames", str(len(frames))),
        ("Selects", str(selects)),
        ("Rejects", str(len(rejects))),
        ("Bursts", f"{len(bursts)} ({in_bursts} frames)" if bursts else "0"),
    ]
    unrated = len(frames) - len(rated)
    if unrated:
        figures.append(("Not rated", str(unrated)))
    stamps = sorted(t for f in rated if (t := _parse_time(f.verdict.rated_at)))
    if stamps:
        # RatedAt is when each sidecar was written (to the second): the span of a shoot's
        # rating, not its cost. The cost per frame is in the daemon's journal only.
        first, last = stamps[0], stamps[-1]
        when = first.strftime("%Y-%m-%d %H:%M")
        span = (last - first).total_seconds()
        if span >= 60:
            when += (
                f" to {last.strftime('%H:%M' if last.date() == first.date() else '%Y-%m-%d %H:%M')}"
            )
        figures.append(("Rated", when))
    timed = [f.elapsed_ms for f in frames if f.elapsed_ms]
    if timed:
        figures.append(
            (
                "Time taken",
                f"{_duration(sum(timed) / 1000)} of analysis, "
                f"{sum(timed) / len(timed):.0f} ms a frame (daemon's journal)",
            )
        )
    figures.append(("This page", f"made in {_duration(seconds)}"))
    out = [
        '<section class="summary" aria-labelledby="summary-h"><h2 id="summary-h">Summary</h2>',
        '<dl class="figures">',
    ]
    out += [f"<div><dt>{e(k)}</dt><dd>{e(v)}</dd></div>" for k, v in figures]
    out.append("</dl>")
    if stars:
        out.append('<div class="breakdown"><h3>Stars</h3><ul class="counts">')
        for value in sorted(stars, key=lambda s: -99 if s is None else s, reverse=True):
            out.append(f"<li><span>{e(stars_text(value))}</span> <b>{stars[value]}</b></li>")
        out.append("</ul></div>")
    if reasons:
        out.append('<div class="breakdown"><h3>Rejects by reason</h3><ul class="counts">')
        for reason, count in reasons.most_common():
            out.append(f"<li><span>{e(reason)}</span> <b>{count}</b></li>")
        out.append("</ul></div>")
    problems = [f for f in frames if f.problem and not f.verdict.rated]
    if problems:
        out.append('<div class="breakdown problems"><h3>Not rated</h3><ul>')
        out += [f"<li>{e(f.name)}: {e(f.problem or '')}</li>" for f in problems[:50]]
        if len(problems) > 50:
            out.append(f"<li>and {len(problems) - 50} more</li>")
        out.append("</ul></div>")
    out.append("</section>")
    return "".join(out)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    return f"{minutes // 60} h {minutes % 60} min"


def _filters(frames: Sequence[Frame]) -> str:
    """Filter controls; hidden until the script shows them (they need it)."""
    e = html.escape
    stars = Counter(_stars_key(f) for f in frames)
    labels = Counter(f.verdict.label or "none" for f in frames)
    reasons = Counter(r for f in frames for r in f.verdict.reasons)
    no_reason = sum(1 for f in frames if not f.verdict.reasons)

    def box(group: str, value: str, text: str, count: int) -> str:
        ident = f"{group}-{re.sub(r'[^a-z0-9-]+', '-', value.lower())}"
        return (
            f'<label for="{e(ident)}"><input type="checkbox" id="{e(ident)}" name="{group}" '
            f'value="{e(value)}" checked> {e(text)} <span class="n">{count}</span></label>'
        )

    star_values = sorted(stars, key=lambda s: -99 if s == "none" else int(s), reverse=True)
    parts = [
        '<form class="filters" id="filters" hidden aria-label="Filter the photos">',
        '<fieldset class="show"><legend>Show</legend>',
        '<label for="show-all"><input type="radio" name="show" id="show-all" value="all" checked>'
        " All</label>",
        '<label for="show-select"><input type="radio" name="show" id="show-select" '
        'value="select"> Selects only</label>',
        '<label for="show-reject"><input type="radio" name="show" id="show-reject" '
        'value="reject"> Rejects only</label></fieldset>',
        "<fieldset><legend>Stars</legend>",
        *(
            box("stars", s, stars_text(None if s == "none" else int(s)), stars[s])
            for s in star_values
        ),
        "</fieldset>",
        "<fieldset><legend>Label</legend>",
        *(box("label", k, "no label" if k == "none" else k, labels[k]) for k in sorted(labels)),
        "</fieldset>",
        "<fieldset><legend>Reason</legend>",
        *(box("reason", r, r, n) for r, n in reasons.most_common()),
        box("reason", "none", "no reason", no_reason) if no_reason else "",
        "</fieldset>",
        '<div class="filter-end"><button type="reset">Show all</button>',
        f'<p id="shown" role="status" aria-live="polite">Showing {len(frames)} of {len(frames)}'
        " photos</p></div></form>",
    ]
    return "".join(parts)


def _stars_key(frame: Frame) -> str:
    stars = frame.verdict.stars
    return "none" if stars is None else str(stars)


def _folder_section(folder: Path, frames: list[Frame], roots: Sequence[Path], several: bool) -> str:
    e = html.escape
    out = ['<section class="folder" aria-label="' + e(_folder_name(folder, roots)) + '">']
    if several:
        rejects = sum(f.is_reject for f in frames)
        selects = sum(f.is_select for f in frames)
        out.append(
            f'<h2>{e(_folder_name(folder, roots))} <span class="sub">{len(frames)} frames, '
            f"{selects} selects, {rejects} rejects</span></h2>"
        )
    out.append('<ol class="sheet">')
    i = 0
    while i < len(frames):
        frame = frames[i]
        burst = frame.verdict.burst_id
        j = i + 1
        if burst:
            while j < len(frames) and frames[j].verdict.burst_id == burst:
                j += 1
        if burst and j - i > 1:
            group = frames[i:j]
            best = next((f for f in group if f.verdict.best_of_burst), None)
            best_text = f", best: {best.name}" if best else ", no frame without a fault"
            out.append(
                f'<li class="burst" data-burst="{e(burst)}"><h3 class="burst-h">Burst {e(burst)}'
                f' <span class="sub">{len(group)} frames{e(best_text)}</span></h3><ol>'
            )
            out += [_card(f) for f in group]
            out.append("</ol></li>")
        else:
            out += [_card(f) for f in frames[i:j]]
        i = j
    out.append("</ol></section>")
    return "".join(out)


def _folder_name(folder: Path, roots: Sequence[Path]) -> str:
    for root in roots:
        try:
            relative = folder.resolve().relative_to(Path(root).resolve())
        except (ValueError, OSError):
            continue
        return (
            str(Path(Path(root).resolve().name) / relative)
            if str(relative) != "."
            else (Path(root).resolve().name)
        )
    return str(folder)


def _img(picture: Picture, alt: str) -> str:
    """Lazy: a 3,000-frame page loads the thumbnails in view, and a larger view on opening."""
    e = html.escape
    return (
        f'<img src="{e(picture.src)}" width="{picture.width}" height="{picture.height}" '
        f'loading="lazy" decoding="async" alt="{e(alt)}">'
    )


def _stars_html(stars: int | None) -> str:
    if stars is None:
        return '<span class="stars none">no rating</span>'
    if stars < 0:
        return '<span class="stars rejected">rejected</span>'
    shown = "★" * stars + "☆" * (5 - stars)
    return (
        f'<span class="stars"><span aria-hidden="true">{shown}</span>'
        f'<span class="vh">{stars_text(stars)}</span></span>'
    )


def _card(frame: Frame) -> str:
    e = html.escape
    v = frame.verdict
    classes = ["card", f"v-{v.verdict or ('keep' if v.rated else 'unrated')}"]
    if v.best_of_burst:
        classes.append("best")
    data = {
        "stars": _stars_key(frame),
        "label": v.label or "none",
        "verdict": v.verdict or ("keep" if v.rated else "unrated"),
        "reasons": "|".join(v.reasons) or "none",
    }
    attrs = " ".join(f'data-{k}="{e(val)}"' for k, val in data.items())
    if frame.thumb:
        picture = _img(frame.thumb, alt_text(frame))
    else:
        picture = (
            f'<span class="noimg" role="img" aria-label="{e(alt_text(frame))}">no preview</span>'
        )
    meta = [f'<span class="name">{e(frame.name)}</span>']
    if v.rated:
        line = [_stars_html(v.stars)]
        if v.label:
            line.append(f'<span class="label c-{e(v.color or "none")}">{e(v.label)}</span>')
        if v.keeper_probability is not None:
            line.append(
                f'<span class="p" title="keeper probability">p {v.keeper_probability:.2f}</span>'
            )
        meta.append('<span class="line">' + "".join(line) + "</span>")
        badges = []
        if v.verdict:
            badges.append(f'<span class="badge {v.verdict}">{v.verdict}</span>')
        if v.best_of_burst:
            badges.append('<span class="badge bestmark">★ best of burst</span>')
        badges += [f'<span class="reason">{e(r)}</span>' for r in v.reasons]
        badges += [f'<span class="reason check">check {e(c)}</span>' for c in v.checks]
        if v.overruled:
            badges.append('<span class="reason person">verdict set by a person</span>')
        if badges:
            meta.append('<span class="badges">' + "".join(badges) + "</span>")
    else:
        meta.append(f'<span class="problem">{e(frame.problem or "not rated")}</span>')
    return (
        f'<li class="{" ".join(classes)}" id="c{frame.index}" {attrs}>'
        f'<a class="thumb" href="#f{frame.index}">{picture}</a>'
        f'<div class="meta">{"".join(meta)}</div></li>'
    )


def _detail(frame: Frame, before: Frame | None, after: Frame | None) -> str:
    """The larger view: a section shown by CSS :target, so it needs no script."""
    e = html.escape
    v = frame.verdict
    heading = f"{frame.name}: {verdict_text(frame)}"
    out = [
        f'<section class="detail" id="f{frame.index}" role="dialog" '
        f'aria-labelledby="h{frame.index}" data-card="c{frame.index}">',
        '<nav class="detail-nav" aria-label="Photos">',
        f'<a class="prev" href="#f{before.index}" rel="prev">← Previous</a>' if before else "",
        f'<a class="next" href="#f{after.index}" rel="next">Next →</a>' if after else "",
        f'<a class="close" href="#c{frame.index}">Close <span aria-hidden="true">✕</span></a>',
        "</nav>",
        '<figure class="view">',
    ]
    if frame.large:
        out.append('<div class="frame-image">')
        out.append(_img(frame.large, alt_text(frame)))
        out.append(_face_boxes(v, frame.large))
        out.append("</div>")
    else:
        out.append(f'<p class="noimg">{e(frame.problem or "no preview")}</p>')
    out.append(f"<figcaption>{e(str(frame.path))}</figcaption></figure>")
    out.append(f'<div class="numbers"><h2 id="h{frame.index}" tabindex="-1">{e(heading)}</h2>')
    rows: list[tuple[str, str]] = []
    if v.rated:
        stars = stars_text(v.stars) + (" (set by a person)" if v.rating_by_person else "")
        rows.append(("Rating", stars))
        rows.append(("Label", v.label or "none"))
        if v.burst_id:
            size = f" of {v.burst_size} frames" if v.burst_size else ""
            rows.append(
                ("Burst", f"{v.burst_id}{size}" + (", best frame" if v.best_of_burst else ""))
            )
        rows += list(v.numbers)
    elif frame.problem:
        rows.append(("Problem", frame.problem))
    if frame.capture_time:
        rows.append(("Captured", frame.capture_time.strftime("%Y-%m-%d %H:%M:%S.%f")[:-4]))
    if frame.camera:
        rows.append(("Camera", frame.camera))
    if frame.elapsed_ms:
        rows.append(("Time to rate", f"{frame.elapsed_ms:.0f} ms"))
    if frame.sidecar:
        rows.append(("Sidecar", frame.sidecar.name))
    out.append('<dl class="nums">')
    out += [f"<div><dt>{e(k)}</dt><dd>{e(val)}</dd></div>" for k, val in rows]
    out.append("</dl>")
    if v.faces:
        out.append(
            '<table class="faces"><caption>Faces (boxes drawn on the photo)</caption>'
            '<thead><tr><th scope="col">Face</th><th scope="col">Eye openness (left/right)</th>'
            '<th scope="col">Sharpness</th></tr></thead><tbody>'
        )
        for n, face in enumerate(v.faces, 1):
            out.append(
                f'<tr><th scope="row">{n}</th><td>{e(face.eye_openness)}</td>'
                f"<td>{e(face.sharpness)}</td></tr>"
            )
        out.append("</tbody></table>")
    out.append("</div></section>")
    return "".join(out)


def _face_boxes(v: Verdict, large: Picture) -> str:
    """Face boxes in the preview's pixels, drawn over the larger view (same picture, scaled)."""
    boxes = [(n, f.box) for n, f in enumerate(v.faces, 1) if f.box]
    if not boxes:
        return ""
    width, height = v.preview_size or (large.width, large.height)
    text_size = max(12, round(max(width, height) / 45))
    out = [
        f'<svg class="boxes" viewBox="0 0 {width} {height}" preserveAspectRatio="xMidYMid meet" '
        'aria-hidden="true" focusable="false">'
    ]
    for n, (x, y, w, h) in boxes:
        out.append(
            f'<rect x="{x:g}" y="{y:g}" width="{w:g}" height="{h:g}" '
            'vector-effect="non-scaling-stroke"/>'
            f'<text x="{x:g}" y="{max(text_size, y - 4):g}" font-size="{text_size}">{n}</text>'
        )
    out.append("</svg>")
    return "".join(out)
