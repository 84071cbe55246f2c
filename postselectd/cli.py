"""Command line: argument parsing and output only; the work happens in the modules.

Exit status: 0 every file rated, 1 some files failed (each named with its reason),
2 bad usage, bad config or unusable models, 3 (score) no photos in the paths given,
130 interrupted, 141 the reader of the output went away (``| head``), as for a tool
SIGPIPE ends. Each command's --help lists what they mean for it.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import re
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

from postselectd import __version__
from postselectd.config import Config, ConfigError, WatchFolder, load_config
from postselectd.rating import PREVIEW_TOO_SMALL, SMALLEST_JUDGED_PREVIEW

log = logging.getLogger("postselectd")

EXIT_OK, EXIT_FAILURES, EXIT_USAGE = 0, 1, 2
# Nothing to rate is neither success (nothing was rated) nor a failed file nor bad usage:
# a script can tell an empty card from a failure.
EXIT_NO_PHOTOS = 3
# What a shell reports for a program SIGPIPE ended (128 + 13), which Python's own
# handling of EPIPE would otherwise turn into a traceback.
EXIT_BROKEN_PIPE = 141


class UsageError(Exception):
    pass


EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports a program SIGINT ended (128 + 2)

# The exit statuses every command that prints shares; each table lists its own first.
_INTERRUPTED = (EXIT_INTERRUPTED, "interrupted (Ctrl-C)")
_BROKEN_PIPE = (EXIT_BROKEN_PIPE, "the output's reader went away (`... | head`)")


def _command(
    sub,
    name: str,
    parents: list[argparse.ArgumentParser],
    summary: str,
    description: str,
    statuses: list[tuple[int, str]],
) -> argparse.ArgumentParser:
    """A command whose --help says what it does and what its exit statuses mean."""
    table = "\n".join(
        textwrap.fill(meaning, 78, initial_indent=f"  {code:<4} ", subsequent_indent=" " * 7)
        for code, meaning in statuses
    )
    # Wrapped as argparse wraps the options (78 columns), never inside a `command`.
    kept = re.sub(r"`[^`]*`", lambda m: m.group().replace(" ", "\0"), description)
    return sub.add_parser(
        name,
        parents=parents,
        help=summary,
        description=textwrap.fill(kept, 78).replace("\0", " "),
        epilog="exit status:\n" + table,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="postselectd",
        description="Rates photos as they arrive and writes XMP sidecars your editor reads.",
        epilog="`postselectd COMMAND --help` says what a command does and what its exit "
        "statuses mean.",
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

    score = _command(
        sub,
        "score",
        [common],
        "rate files and folders (recursively) now",
        "Rates the photos in the files and folders given (folders recursively) now: writes "
        "each one's XMP sidecar beside it, prints one line per photo and a summary. Ratings "
        "and labels a person set are kept, unless --force.",
        [
            (
                EXIT_OK,
                "every photo rated (with --cluster or --rerate-with-new-model: or rated by "
                "these models already)",
            ),
            (EXIT_FAILURES, "some photos could not be rated (each is named with its reason)"),
            (
                EXIT_USAGE,
                "bad usage, a bad config or unusable models; with --cluster also: Dask not "
                "installed, the scheduler out of reach, or a worker that cannot analyse",
            ),
            (EXIT_NO_PHOTOS, "no photos found in the paths given (nothing written)"),
            _INTERRUPTED,
            _BROKEN_PIPE,
        ],
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
    score.add_argument(
        "--cluster",
        metavar="ADDRESS",
        help="analyse on a Dask cluster: its scheduler (tcp://HOST:8786), or local for one "
        "on this machine; sidecars are written from here; photos these models rated "
        "already are skipped unless --force (needs: pip install 'postselectd[cluster]')",
    )
    score.add_argument(
        "--rerate-with-new-model",
        action="store_true",
        help="after the daemon learnt or you trained a new model: rate again the photos "
        "another model rated (and any not rated yet), leave those this one rated alone; "
        "ratings and labels a person set are kept",
    )
    score.add_argument(
        "--cluster-workers",
        type=int,
        metavar="N",
        help="with --cluster local: worker processes (default: one per core)",
    )

    run = _command(
        sub,
        "run",
        [common],
        "watch folders and rate photos as they arrive (foreground; the service runs this)",
        "Watches the config's folders (and --watch ones) and rates each photo that arrives "
        "once its copy is complete, writing its sidecar; logs one line per photo until "
        "stopped (SIGTERM, Ctrl-C). The photos already in a folder watched for the first "
        "time are left alone, unless --catch-up. SIGHUP reloads the config. The background "
        "service runs this.",
        [
            (
                EXIT_OK,
                "stopped (SIGTERM, Ctrl-C); under launchd also a mistake as for 2, so "
                "that it is not restarted",
            ),
            (
                EXIT_FAILURES,
                "stopped by a second signal before it finished, or its workers could not "
                "start (a service manager restarts it)",
            ),
            (
                EXIT_USAGE,
                "a mistake only you can fix, said in the line before: bad usage, a bad "
                "config, a watched folder that is not there, unusable models, another "
                "daemon on the same state folder (systemd does not restart it)",
            ),
        ],
    )
    run.add_argument(
        "--watch",
        action="append",
        type=Path,
        default=[],
        metavar="DIR",
        help="also watch this folder (recursively); repeat for several",
    )
    run.add_argument(
        "--catch-up",
        action="store_true",
        help="also rate the photos already in the watched folders (default: only new ones)",
    )
    run.add_argument(
        "--service-manager",
        choices=["launchd"],
        default=None,
        help=argparse.SUPPRESS,  # set by the launchd agent: how to say "do not restart me"
    )

    status = _command(
        sub,
        "status",
        [common],
        "what the daemon has done: queue, rated, failed",
        "Shows what the daemon has done, from its journal: whether it is running, the "
        "queue, the photos rated and failed (with reasons), the last ones rated. A config "
        "with a mistake is said in one line, and the journal is read anyway.",
        [
            (EXIT_OK, "status shown (also while the config has a mistake, or without a journal)"),
            (EXIT_USAGE, "bad usage"),
            _INTERRUPTED,
            _BROKEN_PIPE,
        ],
    )
    status.add_argument("--json", action="store_true", help="print one JSON object")
    status.add_argument(
        "--last", type=int, default=10, metavar="N", help="show the last N files (default 10)"
    )

    train = _command(
        sub,
        "train",
        [common],
        "learn your own taste from photos you rated (sidecars, catalogs, folders)",
        "Learns your own taste from photos you already rated (their sidecars, a Lightroom "
        "catalog, a darktable library) and writes a personal model with its model card; "
        "`model: personal` in the config rates with it. --evaluate only reports how well "
        "it would work.",
        [
            (EXIT_OK, "a model written (with --evaluate: the report shown)"),
            (EXIT_FAILURES, "no useful model can be made (the line says why)"),
            (EXIT_USAGE, "bad usage or a bad config"),
            _INTERRUPTED,
            _BROKEN_PIPE,
        ],
    )
    train.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    train.add_argument(
        "--lrcat", type=Path, metavar="FILE", help="also read ratings from this Lightroom catalog"
    )
    train.add_argument(
        "--darktable-db",
        type=Path,
        metavar="FILE",
        help="also read ratings from this darktable library.db",
    )
    train.add_argument(
        "--evaluate", action="store_true", help="only report how well it would work; write nothing"
    )
    train.add_argument(
        "--json", action="store_true", help="print the model card as one JSON object"
    )
    train.add_argument(
        "--workers", type=int, default=None, help="worker processes (default: one per core)"
    )

    learn_p = _command(
        sub,
        "learn",
        [common],
        "learn from your corrections now, or return to the previous personal model",
        "The running daemon learns from your corrections by itself (`learn:` in the config). "
        "--now trains a new model from them at once (through the daemon when it runs); it is "
        "used only if it keeps at least as many of your selects on held-out shoots. "
        "--rollback returns to the previous personal model (the newer one is kept in "
        "personal/retired/).",
        [
            (EXIT_OK, "done (or handed to the running daemon, whose log says the outcome)"),
            (EXIT_FAILURES, "nothing changed: the new model was refused, or it could not learn"),
            (EXIT_USAGE, "bad usage or a bad config"),
            _INTERRUPTED,
            _BROKEN_PIPE,
        ],
    )
    what = learn_p.add_mutually_exclusive_group(required=True)
    what.add_argument("--now", action="store_true", help="train from the corrections now")
    what.add_argument(
        "--rollback", action="store_true", help="return to the previous personal model"
    )
    # Tests only: train the candidate on shuffled labels, to see a bad model refused.
    learn_p.add_argument("--shuffled-labels", action="store_true", help=argparse.SUPPRESS)

    doctor = _command(
        sub,
        "doctor",
        [common],
        "check config, models, watched folders, limits, disk and the service",
        "Checks what the daemon needs: the config, the models, every folder it watches "
        "(the config's, --watch ones, the installed service's: there, readable, writable "
        "for sidecars, inotify or polling), the inotify limit, free disk space and the "
        "service. Each check prints OK, WARN or FAIL, with what to do.",
        [
            (EXIT_OK, "no check failed (warnings may remain)"),
            (EXIT_FAILURES, "some check failed (a bad config is one)"),
            (EXIT_USAGE, "bad usage"),
            _INTERRUPTED,
            _BROKEN_PIPE,
        ],
    )
    doctor.add_argument(
        "--watch",
        action="append",
        type=Path,
        default=[],
        metavar="DIR",
        help="also check this folder, as `run --watch DIR` would watch it; repeat for several",
    )
    doctor.add_argument(
        "--bench",
        action="store_true",
        help="also measure images/s of the analysis on 20 generated frames (offline, ~5 s)",
    )

    report = _command(
        sub,
        "report",
        [common],
        "write a contact sheet (one HTML page) of rated folders: verdicts at a glance",
        "Writes a contact sheet of rated folders: one HTML page with each photo's "
        "thumbnail and verdict (stars, label, reasons, bursts), to look through the "
        "ratings at a glance. Nothing in the folders is changed.",
        [
            (EXIT_OK, "page written"),
            (EXIT_FAILURES, "the page or its thumbnails could not be written"),
            (EXIT_USAGE, "bad usage, a bad config or a path that does not exist"),
            _INTERRUPTED,
            _BROKEN_PIPE,
        ],
    )
    report.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    report.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        metavar="FILE",
        help="the page to write (default: postselectd-report.html here); its thumbnails go "
        "into FILE_files beside it",
    )
    report.add_argument(
        "--embed",
        action="store_true",
        help="put the thumbnails into the page itself: one file to send (heavy for big shoots)",
    )
    report.add_argument("--open", action="store_true", help="open the page in the browser")
    report.add_argument(
        "--workers", type=int, default=None, help="worker processes (default: one per core)"
    )

    service = _command(
        sub,
        "service",
        [common],
        "install or remove the background service",
        "Installs or removes the background service that runs `postselectd run`: a "
        "systemd user unit on Linux, a launchd agent on macOS; install also starts it "
        "(--no-start: it does not), --print only shows the file.",
        [
            (EXIT_OK, "done (each step is said)"),
            (EXIT_FAILURES, "the service manager refused a step, or the file could not be written"),
            (EXIT_USAGE, "bad usage or a bad config"),
            _INTERRUPTED,
            _BROKEN_PIPE,
        ],
    )
    service.add_argument("action", choices=["install", "uninstall"])
    service.add_argument(
        "--print",
        dest="print_only",
        action="store_true",
        help="only print the service file(s); change nothing",
    )
    service.add_argument(
        "--platform",
        choices=["linux", "macos", "all"],
        default=None,
        help="which service manager (default: this system's; --print also takes all)",
    )
    service.add_argument(
        "--no-start",
        action="store_true",
        help="write the service file, but do not enable or start it",
    )
    return parser


class OneLineFormatter(logging.Formatter):
    """One record, one line: a file named ``a\nb.NEF`` must not split a log line (or
    forge a second one in the journal). Control characters in the message are escaped;
    a traceback (``--log-level debug``) still follows on its own lines."""

    _ESCAPES = {c: f"\\x{c:02x}" for c in range(32) if c != 9} | {127: "\\x7f"}
    _ESCAPES |= {c: f"\\x{c:02x}" for c in range(0x80, 0xA0)}  # C1: 0x9b is CSI too

    def formatMessage(self, record: logging.LogRecord) -> str:
        return super().formatMessage(record).translate(self._ESCAPES)


# Characters that drive a terminal or hide what a name says: C0 (newline, ESC), DEL, C1
# (0x9b opens an escape sequence like ESC [), and the bidi overrides that show a name
# reversed ("gpj.EXE" for "EXE.jpg").
_TERMINAL_ESCAPES = (
    {c: f"\\x{c:02x}" for c in [*range(32), 127, *range(0x80, 0xA0)]}
    | {c: f"\\u{c:04x}" for c in [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]}
    | {c: f"\\x{c - 0xDC00:02x}" for c in range(0xDC80, 0xDD00)}  # undecodable bytes
)
_JSON_ESCAPES = {c: f"\\u{c:04x}" for c in [*range(0x80, 0xA0), *range(0x202A, 0x202F)]} | {
    c: f"\\u{c:04x}" for c in [*range(0x2066, 0x206A), *range(0xD800, 0xE000)]
}


def printable(text: object) -> str:
    """A file name or reason as one harmless line: what would drive the terminal is
    shown escaped (``\\x1b[2J``), everything else as it is (accents, CJK, emoji)."""
    return str(text).translate(_TERMINAL_ESCAPES)


def json_line(value: object) -> str:
    """One JSON line that is also safe on a terminal: json escapes C0 itself; C1, bidi
    overrides and lone surrogates become \\u escapes, so the names still decode exactly."""
    return json.dumps(value, ensure_ascii=False).translate(_JSON_ESCAPES)


def stderr_is_the_journal(environ: dict | None = None) -> bool:
    """Whether stderr goes straight to systemd's journal, which stamps each line with its
    time itself: systemd sets JOURNAL_STREAM to the stream's "DEVICE:INODE" (systemd.exec(5)),
    and only a stderr that is that very stream counts (not one redirected elsewhere)."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    if not value:
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return value == f"{st.st_dev}:{st.st_ino}"


def setup_logging(level: str, *, with_time: bool = False) -> None:
    """``with_time``: each line starts with the local time (the daemon's log on a terminal
    or in a file; not in the journal, which adds its own)."""
    handler = logging.StreamHandler(sys.stderr)
    fmt = "%(levelname)s %(message)s" if level == "debug" else "%(message)s"
    if with_time:
        fmt = "%(asctime)s " + fmt
    handler.setFormatter(OneLineFormatter(fmt, datefmt="%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def main(argv: list[str] | None = None) -> int:
    # A file name that is not valid UTF-8 (b'DSC_\xff01.NEF') is printed as DSC_\udcff01.NEF
    # (in --json output too, where that is its exact escape), not a crash of a strict stdout.
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="backslashreplace")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        config, source = load_config(args.config)
    except ConfigError as exc:
        if args.command == "doctor":  # a bad config is one of the things it reports
            setup_logging(args.log_level or "info")
            return cmd_doctor(args, None, str(exc))
        if args.command == "status":  # it only reads the journal: say, and show it
            from postselectd.config import lenient_state_dir

            print(f"postselectd: bad config (status read anyway): {exc}", file=sys.stderr)
            fallback = Config(state_dir=lenient_state_dir(args.config))
            return cmd_status(args, fallback, config_error=str(exc))
        print(f"postselectd: bad config: {exc}", file=sys.stderr)
        if args.command == "run":
            return _not_restarted(args)
        return EXIT_USAGE
    # The daemon's lines are read later, in a file or on a terminal left open: each says
    # when. The batch commands answer now, and the journal stamps lines itself.
    with_time = args.command == "run" and not stderr_is_the_journal()
    setup_logging(args.log_level or config.log_level, with_time=with_time)
    log.debug("config from %s", source)
    try:
        if args.command == "score":
            return cmd_score(args, config)
        if args.command == "run":
            return cmd_run(args, config, source)
        if args.command == "status":
            return cmd_status(args, config)
        if args.command == "doctor":
            return cmd_doctor(args, config, source)
        if args.command == "train":
            return cmd_train(args, config)
        if args.command == "learn":
            return cmd_learn(args, config)
        if args.command == "service":
            return cmd_service(args, config)
        if args.command == "report":
            return cmd_report(args, config)
    except UsageError as exc:
        print(f"postselectd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("postselectd: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of stdout went away (`score --json | head -3`): stop quietly, as Unix
        # tools do. stdout is pointed at /dev/null, so that Python's flush of it at exit
        # does not fail once more (the pattern in Python's `signal` documentation).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE
    parser.print_help(sys.stderr)
    return EXIT_USAGE


def _model_check(config: Config) -> str:
    """The models' version; UsageError if they cannot be used."""
    from postselectd.analysis import Analyzer, ModelError

    try:
        return Analyzer(config.analysis).model_version
    except ModelError as exc:
        raise UsageError(f"models unusable: {exc}") from None


def cmd_score(args: argparse.Namespace, config: Config) -> int:
    missing = [p for p in args.paths if not p.exists()]
    if missing:
        raise UsageError("no such file or folder: " + ", ".join(str(p) for p in missing))
    if args.workers is not None and args.workers < 1:
        raise UsageError("--workers must be at least 1")
    cluster = _cluster(args, config)
    # The first worker process starts now, before the folder is read: loading the models is
    # most of a short run's time (bench/start_time.py). It loads them in this run's place:
    # a model it cannot load stops the run with its one line (PipelineError) before any
    # file is rated.
    first_worker = None if cluster else _start_first_worker(config)
    try:
        return _score(args, config, cluster, first_worker)
    finally:
        if first_worker is not None:  # closed already, unless no file was given to it
            first_worker[0].close(timeout=0)


def _start_first_worker(config: Config):
    """A pool of one worker process and its inbox, for PoolAnalysis(started=...).

    On Linux the worker is forked from this process (WorkerPool(fork=True)), after this
    process has imported the worker's stage (numpy, onnxruntime, Pillow, rawpy), which
    it needs itself too: the worker starts with all of it, and nothing is imported twice
    (bench/start_time.py). Where it is spawned (macOS, or this process runs threads), it
    is spawned first, to import all of that while this process does the same."""
    import importlib
    import queue

    from postselectd.workers import WorkerBody, WorkerPool, fork_is_safe

    inbox: queue.Queue = queue.Queue()
    # stages.worker_body, by the module's name: a spawned worker starts before this
    # process imports it.
    body = WorkerBody("postselectd.stages", config.analysis)
    if fork_is_safe():
        # numpy's OpenBLAS starts a thread at import, unless told to use one (it has
        # nothing big to multiply here, and a worker per core anyway); a process running
        # a thread must not fork, and the pool would spawn instead.
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
        importlib.import_module(body.module)
    return WorkerPool(1, body, inbox.put, fork=True), inbox


def _score(args: argparse.Namespace, config: Config, cluster, first_worker) -> int:
    from postselectd.photos import find_photos
    from postselectd.pipeline import Pipeline, PipelineError, PoolAnalysis, default_workers

    # --cluster checks the models here; it and --rerate-with-new-model need their version
    # to leave what they rated.
    leave = cluster or args.rerate_with_new_model
    model_version = _model_check(config) if leave else None
    passed_over: Counter[str] = Counter()
    # Videos too: each is named as not a photo (a failed file), not passed over in silence.
    files = list(find_photos(args.paths, config.sidecar.profiles, passed_over, videos=True))
    if not files:
        print(f"postselectd: {no_photos_found(args.paths, passed_over)}", file=sys.stderr)
        return EXIT_NO_PHOTOS
    if leave and not args.force:
        files = _leave_rated(files, config, model_version)
        if not files:
            return EXIT_OK
    workers = args.workers or max(1, min(len(files), default_workers()))
    local = None
    if not cluster:
        # As many workers as the files need start while this process reads every file's
        # capture time and starts the sidecar writer.
        local = PoolAnalysis(config.analysis, workers, started=first_worker)
        local.start(len(files))
    progress = Progress(len(files), enabled=sys.stderr.isatty())
    started = time.perf_counter()

    def on_result(result) -> None:
        progress.clear()
        report_file(result)
        if args.json:
            print(json.dumps(result.as_json(), ensure_ascii=False), flush=True)

    def on_analyzed(_scored) -> None:
        progress.advance()

    try:
        with (
            cluster or local,
            Pipeline(
                config,
                workers=workers,
                force=args.force,
                dry_run=args.dry_run,
                analyze_on=(cluster or local).analyze,
            ) as pipeline,
        ):
            results = pipeline.score(files, on_result, on_analyzed)
    except PipelineError as exc:
        raise UsageError(str(exc)) from None
    progress.clear()
    elapsed = time.perf_counter() - started
    summary = format_summary(results, elapsed, dry_run=args.dry_run)
    print(summary, file=sys.stderr if args.json else sys.stdout)
    return EXIT_FAILURES if any(r.error for r in results) else EXIT_OK


def _cluster(args: argparse.Namespace, config: Config):
    """``score --cluster``: a ClusterAnalysis (not yet connected), or None."""
    if args.cluster is None:
        if args.cluster_workers is not None:
            raise UsageError("--cluster-workers goes with --cluster local")
        return None
    if args.cluster_workers is not None and (args.cluster != "local" or args.cluster_workers < 1):
        raise UsageError("--cluster-workers takes a number of at least 1, with --cluster local")
    from postselectd.cluster import ClusterAnalysis, ClusterError

    try:
        return ClusterAnalysis(args.cluster, config.analysis, workers=args.cluster_workers)
    except ClusterError as exc:
        raise UsageError(str(exc)) from None


def _leave_rated(files: list, config: Config, model_version: str) -> list:
    """The photos still to rate: ``score --cluster`` run again finishes a stopped run;
    ``--rerate-with-new-model`` rates again only what another model rated."""
    from postselectd.pipeline import leave_rated

    files, rated = leave_rated(files, config, model_version)
    if rated:
        log.info(
            "%d of %d photos already rated by %s: left alone (--force rates them again)",
            len(rated),
            len(rated) + len(files),
            model_version,
        )
    return files


def no_photos_found(paths: list[Path], passed_over: Counter[str]) -> str:
    """The sentence for a run with nothing to rate: where, what it looked for, and the
    pictures it passed over (a folder of PNG exports is not "empty")."""
    from postselectd.photos import passed_over_text
    from postselectd.rawmeta import PHOTO_SUFFIXES

    where = ", ".join(printable(p) for p in paths)
    looked_for = ", ".join(sorted(s.upper() for s in PHOTO_SUFFIXES))
    text = f"no photos found in {where} (looked for {looked_for})"
    if passed_over:
        text += "; passed over " + passed_over_text(passed_over)
    return text


def cmd_train(args: argparse.Namespace, config: Config) -> int:
    """Exit 0 with a model (or the --evaluate report), 1 when no useful model can be made."""
    # One BLAS thread, set before numpy loads: the head's matrices are a few hundred wide,
    # and BLAS threads only spin against the feature workers and whatever else runs
    # (1,000 cached frames, `train --evaluate`, loaded 2-core machine: 61 s, 2.9 s with one).
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, "1")
    from postselectd.analysis import ModelError
    from postselectd.pipeline import default_workers
    from postselectd.train import TrainError, format_card, train

    if args.workers is not None and args.workers < 1:
        raise UsageError("--workers must be at least 1")
    for option, path in (("--lrcat", args.lrcat), ("--darktable-db", args.darktable_db)):
        if path is not None and not path.is_file():
            raise UsageError(f"{option} {path}: no such file")
    progress: Progress | None = None

    def on_progress(done: int, total: int) -> None:
        nonlocal progress
        if progress is None:
            progress = Progress(total, enabled=sys.stderr.isatty())
            progress.done = done - 1
        progress.advance()

    try:
        result = train(
            args.paths,
            config,
            lrcat=args.lrcat,
            darktable_db=args.darktable_db,
            evaluate_only=args.evaluate,
            workers=args.workers or default_workers(),
            on_progress=on_progress,
        )
    except (TrainError, ModelError) as exc:
        if progress:
            progress.clear()
        print(f"postselectd: no model: {exc}", file=sys.stderr)
        return EXIT_FAILURES
    if progress:
        progress.clear()
    if args.json:
        print(json.dumps(result.card, ensure_ascii=False))
    else:
        print(format_card(result.card))
        if result.model_path and config.model != "personal":
            print("to rate with it, set `model: personal` in the config")
    return EXIT_OK


def cmd_learn(args: argparse.Namespace, config: Config) -> int:
    """Through the running daemon when there is one (it owns the workers that must load the
    model), else here."""
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, "1")
    from postselectd import learn
    from postselectd.daemon import running_daemon_pid

    pid = running_daemon_pid(config.resolved_state_dir())
    action = "rollback" if args.rollback else "now"
    if pid:
        learn.request(config, action, shuffle_labels=args.shuffled_labels)
        print(
            f"asked the running daemon (pid {pid}) to "
            + ("return to the previous model" if args.rollback else "learn now")
            + "; its log says the outcome"
        )
        return EXIT_OK
    if args.rollback:
        try:
            retired, now = learn.rollback(config)
        except learn.LearnError as exc:
            print(f"postselectd: {exc}", file=sys.stderr)
            return EXIT_FAILURES
        print(f"{now.stem} rates the next photos ({retired.stem} kept in {retired.parent})")
        return EXIT_OK
    outcome = learn.retrain(
        config, reason="asked with `postselectd learn --now`", shuffle_labels=args.shuffled_labels
    )
    print(learn.outcome_line(outcome))
    return EXIT_OK if outcome.get("outcome") == "swapped" else EXIT_FAILURES


def cmd_run(args: argparse.Namespace, config: Config, source: str) -> int:
    from postselectd.daemon import Daemon, DaemonError

    extra = []
    for folder in args.watch:
        if folder.exists() and not folder.is_dir():
            raise UsageError(f"--watch {folder}: not a folder")
        extra.append(WatchFolder(path=folder.expanduser().absolute()))
    daemon = Daemon(
        config,
        config_source=source,
        config_path=args.config,
        extra_watches=extra,
        catch_up=args.catch_up,
        on_result=lambda result: report_file(result, daemon.shown_name(result.path)),
        log_level_fixed=args.log_level is not None,
    )
    try:
        return daemon.run()
    except DaemonError as exc:
        log.error("postselectd: %s", exc)
        return EXIT_FAILURES if exc.retry else _not_restarted(args)


def _not_restarted(args: argparse.Namespace) -> int:
    """The exit status of a daemon that must not be restarted until a person fixes what
    the line before says (a bad config, a missing folder, unusable models).

    systemd: 2, which the unit names in RestartPreventExitStatus. launchd restarts a job
    on any non-zero status (KeepAlive/SuccessfulExit=false) and has no rule per status,
    so under it (the agent passes --service-manager launchd) this is 0: a job that exits
    0 is not started again until it is kicked, the reason is logged once.
    """
    if args.service_manager == "launchd":
        from postselectd.service import LAUNCHD_LABEL

        print(
            "postselectd: not restarted until this is fixed; then run "
            f"`launchctl kickstart -k gui/{os.getuid()}/{LAUNCHD_LABEL}`",
            file=sys.stderr,
        )
        return EXIT_OK
    if os.environ.get("INVOCATION_ID"):  # started by systemd
        print(
            "postselectd: not restarted until this is fixed; then run "
            "`systemctl --user restart postselectd`",
            file=sys.stderr,
        )
    return EXIT_USAGE


def cmd_status(args: argparse.Namespace, config: Config, config_error: str | None = None) -> int:
    """``config_error``: the config could not be used; ``config`` then holds only the state
    folder it names (or the default one), and the JSON says why under ``config_error``."""
    from postselectd.daemon import running_daemon_pid
    from postselectd.sidecar import waits_for
    from postselectd.state import Journal, JournalError

    state_dir = config.resolved_state_dir()
    pid = running_daemon_pid(state_dir)
    extra = {"config_error": config_error} if config_error else {}
    try:
        journal = Journal(state_dir, readonly=True)
    except JournalError as exc:
        if args.json:
            print(json_line({"journal": None, "running_pid": pid, "error": str(exc), **extra}))
        else:
            print(f"postselectd: {exc}")
        return EXIT_OK
    with journal:
        counts = journal.counts()
        now = time.time()
        last_hour = journal.rated_since(now - 3600)
        last_10_min = journal.rated_since(now - 600)
        report = {
            "journal": str(journal.path),
            "running_pid": pid,
            "queue": counts["pending"],
            "retrying": journal.retrying(),
            # Photos waiting for their folder: space, or write access, with the folder.
            "waiting": [
                {"folder": str(folder), "photos": count, "reason": reason}
                for folder, (count, reason) in journal.waiting().items()
            ],
            "rated": counts["rated"],
            "failed": counts["failed"],
            "skipped": counts["skipped"],
            "rated_last_hour": last_hour,
            "rate_per_minute": round(last_10_min / 10.0, 1),
            "last": [
                {
                    "path": str(r.path),
                    "stars": r.stars,
                    "label": r.label,
                    "rated_at": r.rated_at,
                }
                for r in journal.recent("rated", max(0, args.last))
            ],
            "failures": [
                {"path": str(r.path), "reason": r.reason, "attempts": r.attempts}
                for r in journal.recent("failed", 1000)
            ],
            **extra,
        }
        if not config_error:
            from postselectd import learn

            report["learn"] = learn.summary(config, journal)
    if args.json:
        print(json_line(report))
        return EXIT_OK
    running = f"running (pid {pid})" if pid else "not running"
    lines = [
        f"{'daemon':<14}{running}",
        f"{'journal':<14}{printable(report['journal'])}",
        f"{'queue':<14}{report['queue']}"
        + (f" ({report['retrying']} waiting to retry)" if report["retrying"] else ""),
        *(
            f"{'waiting':<14}{w['photos']} in {printable(w['folder'])} for "
            + (waits_for(w["reason"]) or "space")
            + f" ({printable(w['reason'])})"
            for w in report["waiting"]
        ),
        f"{'rated':<14}{report['rated']} ({last_hour} in the last hour)",
        f"{'failed':<14}{report['failed']}",
        f"{'skipped':<14}{report['skipped']}",
        f"{'rate':<14}{report['rate_per_minute']} files/min (last 10 min)",
    ]
    if report["last"]:
        lines.append("last rated:")
        for item in report["last"]:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(item["rated_at"] or 0))
            stars = "-" if item["stars"] is None else f"{item['stars']}*"
            label = printable(item["label"] or "-")
            lines.append(f"  {when}  {stars:<3} {label:<7} {printable(item['path'])}")
    if "learn" in report:
        lines += learn_lines(report["learn"])
    if report["failures"]:
        lines.append("failed:")
        for item in report["failures"]:
            path, reason = printable(item["path"]), printable(item["reason"])
            lines.append(f"  {path}: {reason} ({item['attempts']} attempts)")
    print("\n".join(lines))
    return EXIT_OK


def learn_lines(learnt: dict) -> list[str]:
    """What `status` says of the personal model and the learning from corrections."""

    def pct(value) -> str:
        return "-" if value is None else f"{100 * value:.0f}%"

    def interval(pair) -> str:
        return f" ({pct(pair[0])}-{pct(pair[1])})" if pair else ""

    lines = [
        f"{'learning':<14}"
        + ("on" if learnt["learning"] else f"off: {learnt['off']}")
        + f"; {learnt['corrections']} corrections in all"
        + (
            f", {learnt['corrections_since_model']} since the model in use"
            if "corrections_since_model" in learnt
            else ""
        )
    ]
    model = learnt.get("model")
    if model:
        lines.append(f"{'model':<14}{printable(model['path'])}, trained {model['trained']}")
        lines.append(
            f"{'':<14}keeps {pct(model['recall'])}{interval(model['recall_interval'])} of "
            f"your selects on held-out shoots; {pct(model['precision'])}"
            f"{interval(model['precision_interval'])} of what it keeps are selects"
        )
        overruled = model.get("overruled_reasons")
        lines.append(
            f"{'':<14}"
            + (
                f"overrules {', '.join(overruled)}: you keep such frames, your model decides"
                if overruled
                else "overrules no reason: blur, closed eyes, bad exposure still reject"
            )
        )
        if (never := model.get("never_kept_people")) and never.get("applies"):
            lines.append(f"{'':<14}keeps no photo with a person in it: you kept none")
    if learnt.get("cold_start"):
        lines.append(f"{'':<14}no personal model yet: {learnt['cold_start']}")
    last = learnt.get("last_try")
    if last:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(last.get("at", 0)))
        lines.append(f"{'last try':<14}{when}: {last.get('outcome')}")
    return lines


def cmd_doctor(args: argparse.Namespace, config: Config | None, source: str) -> int:
    """Each check prints OK, WARN or FAIL with what to do; exit 1 when any FAIL."""
    from postselectd.doctor import FAIL, checks

    results = checks(config, source, watch=args.watch, config_file=args.config, bench=args.bench)
    width = max(len(what) for _, what, _ in results)
    for status, what, detail in results:
        print(f"{status:<5} {what:<{width}}  {detail}")
    return EXIT_FAILURES if any(status == FAIL for status, _, _ in results) else EXIT_OK


def cmd_service(args: argparse.Namespace, config: Config) -> int:
    from postselectd.service import (
        PLATFORMS,
        ServiceError,
        current_platform,
        install,
        render,
        uninstall,
    )

    platform = args.platform or current_platform()
    if args.print_only:
        if args.action != "install":
            raise UsageError("--print goes with install")
        chosen = PLATFORMS if platform == "all" else (platform,)
        for name in chosen:
            if len(chosen) > 1:
                print(f"# --- {name} ---")
            print(render(name, config=args.config, settings=config), end="")
        return EXIT_OK
    if platform == "all":
        raise UsageError("--platform all only goes with --print")
    if platform != current_platform():
        raise UsageError(f"cannot install a {platform} service on this system (try --print)")
    try:
        if args.action == "install":
            done = install(platform, config=args.config, settings=config, start=not args.no_start)
        else:
            done = uninstall(platform, stop=not args.no_start)
    except ServiceError as exc:
        print(f"postselectd: {exc}", file=sys.stderr)
        return EXIT_FAILURES
    for line in done:
        print(line)
    return EXIT_OK


def cmd_report(args: argparse.Namespace, config: Config) -> int:
    import webbrowser

    from postselectd.config import default_inbox
    from postselectd.pipeline import default_workers
    from postselectd.report import build_report, journal_entries, photos_to_show

    missing = [p for p in args.paths if not p.exists()]
    if missing:
        raise UsageError("no such file or folder: " + ", ".join(str(p) for p in missing))
    if args.workers is not None and args.workers < 1:
        raise UsageError("--workers must be at least 1")
    output = args.output or Path("postselectd-report.html")
    if output.is_dir():
        output = output / "postselectd-report.html"
    photos = photos_to_show(args.paths, config.sidecar.profiles)
    if not photos:
        log.warning("no photos found under %s", ", ".join(str(p) for p in args.paths))
    progress = Progress(len(photos), enabled=sys.stderr.isatty())
    try:
        report = build_report(
            args.paths,
            output,
            photos=photos,
            profiles=config.sidecar.profiles,
            keyword_parent=config.rating.keyword_parent,
            journal=journal_entries(config.resolved_state_dir()),
            embed=args.embed,
            workers=args.workers or max(1, min(len(photos), default_workers())),
            keep_out_of=[w.path for w in config.watch] + [default_inbox()],
            on_frame=lambda _frame: progress.advance(),
        )
    except OSError as exc:
        progress.clear()
        print(f"postselectd: cannot write {output}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILURES
    progress.clear()
    frames = report.frames
    rejects = sum(f.is_reject for f in frames)
    selects = sum(f.is_select for f in frames)
    unrated = sum(not f.verdict.rated for f in frames)
    where = f" (thumbnails in {report.images_dir})" if report.images_dir else ""
    print(
        f"{report.output}: {len(frames)} photos, {selects} selects, {rejects} rejects"
        + (f", {unrated} not rated" if unrated else "")
        + f"; {report.bytes_written / 1e6:.1f} MB in {report.seconds:.1f} s{where}"
    )
    if args.open:
        webbrowser.open(report.output.resolve().as_uri())
    return EXIT_OK


def report_file(result, name: str | None = None) -> None:
    """One line per file at INFO: file, stars, label, keeper probability (named as in
    --json and the sidecar), reasons, ms. ``name``: how the line names the file (the
    daemon's names say the folder too); its own name by default."""
    name = name or result.path.name
    for note in result.notes:
        log.warning("%s: %s", name, note)
    if result.error:
        log.error("%s: %s", name, result.error)
        return
    rating = result.rating
    if result.preview_too_small:
        width, height = result.preview_size or (0, 0)
        log.warning(
            "%s: not judged: its largest readable preview is %dx%d, too small to see focus "
            "and eyes (%d px needed); no stars, keyword check|%s %.0f ms",
            name,
            width,
            height,
            SMALLEST_JUDGED_PREVIEW,
            PREVIEW_TOO_SMALL,
            result.elapsed_ms,
        )
        return
    stars = "reject" if rating.stars < 0 else f"{rating.stars}*"
    label = rating.label or "-"
    reasons = ", ".join(result.reasons) or "-"
    if result.checks:
        reasons += " check=" + ",".join(result.checks)
    kept = ", ".join(
        f"the {what} a person removed" if not value else f"the {what} a person set ({value})"
        for what, value in result.kept_by_person
    )
    kept = f" (kept {kept})" if kept else ""
    if result.overruled:
        kept += " overruled by a person"
    if result.unchanged:
        kept += " sidecar unchanged"
    if result.burst is not None:
        reasons += f" burst={result.burst:04d}" + (" best" if result.best_of_burst else "")
    log.info(
        "%s: %s %s keeper_probability=%.2f reasons=%s %.0f ms%s",
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
    # A frame a person judged no longer carries postselectd's reasons or checks.
    reasons = Counter(reason for r in rated if not r.overruled for reason in r.reasons)
    checks = Counter(family for r in rated if not r.overruled for family in r.checks)
    kept = sum(1 for r in rated if r.kept_human_rating)
    overruled = sum(1 for r in rated if r.overruled)
    unchanged = sum(1 for r in rated if r.unchanged)
    rate = len(results) / elapsed if elapsed > 0 else 0.0
    lines = [
        "",
        f"{'files':<22}{len(results)}",
        f"{'rated' + (' (dry run)' if dry_run else ''):<22}{len(rated)}",
        f"{'failed':<22}{len(failed)}",
        f"{'kept a person rating':<22}{kept}",
        f"{'overruled by a person':<22}{overruled}",
        f"{'sidecars unchanged':<22}{unchanged}",
        f"{'images/s':<22}{rate:.1f}",
        "stars:",
    ]
    for value in (5, 4, 3, 2, 1, -1, 0):
        if stars.get(value):
            name = {-1: "reject (-1)", 0: "not judged (0)"}.get(value, f"{value} " + "*" * value)
            lines.append(f"  {name:<20}{stars[value]}")
    if reasons:
        lines.append("rejects by reason:")
        for reason, count in reasons.most_common():
            lines.append(f"  {reason:<20}{count}")
    if checks:
        lines.append("to check (doubtful):")
        for family, count in checks.most_common():
            lines.append(f"  {family:<20}{count}")
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
