"""Command line: argument parsing and output only; the work happens in the modules.

Exit status: 0 every file rated, 1 some files failed (each named with its reason),
2 bad usage, bad config or unusable models.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import Counter
from pathlib import Path

from postselectd import __version__
from postselectd.config import Config, ConfigError, load_config

log = logging.getLogger("postselectd")

EXIT_OK, EXIT_FAILURES, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="postselectd",
        description="Rates photos as they arrive and writes XMP sidecars your editor reads.",
    )
    parser.add_argument("--version", action="version", version=f"postselectd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        type=Path,
        help="config file (default: the per-user config, else built-in defaults)",
    )
    common.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="overrides the config's log_level",
    )

    score = sub.add_parser(
        "score", parents=[common], help="rate files and folders (recursively) now"
    )
    score.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    score.add_argument(
        "--json", action="store_true", help="print one JSON object per file on stdout"
    )
    score.add_argument("--dry-run", action="store_true", help="analyse and report, write nothing")
    score.add_argument(
        "--force", action="store_true", help="overwrite ratings and labels a person set"
    )
    score.add_argument(
        "--workers", type=int, default=None, help="worker processes (default: one per core)"
    )
    return parser


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(levelname)s %(message)s" if level == "debug" else "%(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        config, source = load_config(args.config)
    except ConfigError as exc:
        print(f"postselectd: bad config: {exc}", file=sys.stderr)
        return EXIT_USAGE
    setup_logging(args.log_level or config.log_level)
    log.debug("config from %s", source)
    try:
        if args.command == "score":
            return cmd_score(args, config)
    except UsageError as exc:
        print(f"postselectd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("postselectd: interrupted", file=sys.stderr)
        return 130
    parser.print_help(sys.stderr)
    return EXIT_USAGE


def _model_check(config: Config) -> None:
    from postselectd.analysis import Analyzer, ModelError

    try:
        Analyzer(config.analysis)
    except ModelError as exc:
        raise UsageError(f"models unusable: {exc}") from None


def cmd_score(args: argparse.Namespace, config: Config) -> int:
    from postselectd.pipeline import Pipeline, default_workers, find_photos

    missing = [p for p in args.paths if not p.exists()]
    if missing:
        raise UsageError("no such file or folder: " + ", ".join(str(p) for p in missing))
    if args.workers is not None and args.workers < 1:
        raise UsageError("--workers must be at least 1")
    _model_check(config)
    files = list(find_photos(args.paths))
    if not files:
        log.warning("no photos found under %s", ", ".join(str(p) for p in args.paths))
    progress = Progress(len(files), enabled=sys.stderr.isatty())
    started = time.perf_counter()

    def on_result(result) -> None:
        progress.clear()
        report_file(result)
        if args.json:
            print(json.dumps(result.as_json(), ensure_ascii=False), flush=True)

    def on_analyzed(_scored) -> None:
        progress.advance()

    workers = args.workers or max(1, min(len(files), default_workers()))
    with Pipeline(config, workers=workers, force=args.force, dry_run=args.dry_run) as pipeline:
        results = pipeline.score(files, on_result, on_analyzed)
    progress.clear()
    elapsed = time.perf_counter() - started
    summary = format_summary(results, elapsed, dry_run=args.dry_run)
    print(summary, file=sys.stderr if args.json else sys.stdout)
    return EXIT_FAILURES if any(r.error for r in results) else EXIT_OK


def report_file(result) -> None:
    """One line per file at INFO: file, stars, label, reasons, ms."""
    name = result.path.name
    for note in result.notes:
        log.warning("%s: %s", name, note)
    if result.error:
        log.error("%s: %s", name, result.error)
        return
    rating = result.rating
    stars = "reject" if rating.stars < 0 else f"{rating.stars}*"
    label = rating.label or "-"
    reasons = ", ".join(result.reasons) or "-"
    kept = " (kept the rating a person set)" if result.kept_human_rating else ""
    if result.burst is not None:
        reasons += f" burst={result.burst:04d}" + (" best" if result.best_of_burst else "")
    log.info(
        "%s: %s %s p=%.2f reasons=%s %.0f ms%s",
        name,
        stars,
        label,
        result.keeper_probability,
        reasons,
        result.elapsed_ms,
        kept,
    )


def format_summary(results, elapsed: float, *, dry_run: bool = False) -> str:
    rated = [r for r in results if not r.error]
    failed = [r for r in results if r.error]
    stars = Counter(r.rating.stars for r in rated)
    reasons = Counter(reason for r in rated for reason in r.reasons)
    kept = sum(1 for r in rated if r.kept_human_rating)
    rate = len(results) / elapsed if elapsed > 0 else 0.0
    lines = [
        "",
        f"{'files':<22}{len(results)}",
        f"{'rated' + (' (dry run)' if dry_run else ''):<22}{len(rated)}",
        f"{'failed':<22}{len(failed)}",
        f"{'kept a person rating':<22}{kept}",
        f"{'images/s':<22}{rate:.1f}",
        "stars:",
    ]
    for value in (5, 4, 3, 2, 1, -1):
        if stars.get(value):
            name = "reject (-1)" if value == -1 else f"{value} " + "*" * value
            lines.append(f"  {name:<20}{stars[value]}")
    if reasons:
        lines.append("rejects by reason:")
        for reason, count in reasons.most_common():
            lines.append(f"  {reason:<20}{count}")
    if failed:
        lines.append("errors:")
        for r in failed:
            lines.append(f"  {r.path}: {r.error}")
    return "\n".join(lines)


class Progress:
    """A one-line progress bar on a terminal; silent otherwise (logs, pipes, services)."""

    def __init__(self, total: int, enabled: bool):
        self.total = total
        self.done = 0
        self.enabled = enabled and total > 0
        self.started = time.perf_counter()

    def advance(self) -> None:
        self.done += 1
        if not self.enabled:
            return
        width = 30
        filled = int(width * self.done / self.total)
        rate = self.done / max(time.perf_counter() - self.started, 1e-6)
        sys.stderr.write(
            f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} {rate:.1f} img/s"
        )
        sys.stderr.flush()

    def clear(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


if __name__ == "__main__":
    sys.exit(main())
