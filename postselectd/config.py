"""The configuration: one typed model that is also its documentation.

Loaded from YAML (``--config FILE``, else the per-user config file, else the built-in
defaults). A bad value fails at load time with the field's path and a reason a
photographer can act on: ``sidecar.profiles.0: must be one of lightroom, darktable, ...``.
"""

from __future__ import annotations

import difflib
import os
import sys
import typing
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

APP = "postselectd"

Profile = Literal["lightroom", "darktable", "digikam", "photomechanic"]


class ConfigError(Exception):
    """A config file that cannot be used; str() is the message for the user."""


class _Model(BaseModel):
    # A misspelt key is a mistake the photographer wants to hear about, not silently ignore.
    model_config = ConfigDict(extra="forbid", frozen=True)


class WatchFolder(_Model):
    path: Path
    recursive: bool = True
    # auto: native events (inotify/FSEvents), polling on network shares where they never arrive.
    poll: Literal["auto"] | bool = "auto"
    # A card or share that is mounted only now and then: may be absent when the daemon
    # starts (it is watched once it appears). Otherwise a missing folder is a mistake (a
    # typo, a renamed folder) and `postselectd run` refuses to start.
    removable: bool = False

    @field_validator("path")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return Path(os.path.expandvars(str(value))).expanduser()


class Labels(_Model):
    """Color-label text. Lightroom matches the text against the active label set."""

    select: str | None = "Green"
    reject: str | None = "Red"


Strictness = Literal["off", "gentle", "normal", "strict"]


class ReasonStrictness(_Model):
    """How sure a reason must be before it rejects a frame, per family of reasons.

    off: never; gentle: only the surest cases reject, fewer checks; normal: the default,
    measured to keep false rejects of good photographs under 3% (bench/eval_trust.py);
    strict: more rejects and checks, for shoots where a soft frame is never wanted. Below
    the reject line a doubtful reason asks for a look (2 stars at most, keyword
    PostSelect|check|<family>), never a reject.
    """

    eyes: Strictness = "normal"
    focus: Strictness = "normal"
    exposure: Strictness = "normal"

    @field_validator("eyes", "focus", "exposure", mode="before")
    @classmethod
    def _unquoted_off(cls, value: object) -> object:
        return _off(value)


def _off(value: object) -> object:
    """YAML 1.1 (PyYAML) reads an unquoted ``off`` as false: it means "off" here."""
    return "off" if value is False else value


class RatingPolicy(_Model):
    # The seed's rule: 4 stars, a select, need a keeper probability of at least 0.90 (or
    # 0.60 and the best frame of a burst: rating.py).
    select_threshold: float = Field(0.90, ge=0.0, le=1.0)
    three_stars_from: float = Field(0.60, ge=0.0, le=1.0)
    two_stars_from: float = Field(0.30, ge=0.0, le=1.0)
    # The best frame of a burst gets one star more (5 at most; never a reject).
    best_of_burst_bonus: bool = True
    # xmp:Rating=-1 marks a reject in Lightroom/Bridge, but RawTherapee and digiKam ignore it.
    reject_rating: bool = False
    labels: Labels = Labels()
    keyword_parent: str = Field("PostSelect", min_length=1)
    # One word for every family (strictness: gentle) or one per family.
    strictness: ReasonStrictness = ReasonStrictness()

    @field_validator("strictness", mode="before")
    @classmethod
    def _one_for_all(cls, value: object) -> object:
        value = _off(value)
        if isinstance(value, str):
            return {"eyes": value, "focus": value, "exposure": value}
        return value

    @model_validator(mode="after")
    def _ordered(self) -> RatingPolicy:
        if not self.two_stars_from <= self.three_stars_from <= self.select_threshold:
            raise ValueError(
                "must satisfy two_stars_from <= three_stars_from <= select_threshold "
                f"(got {self.two_stars_from}, {self.three_stars_from}, {self.select_threshold})"
            )
        return self


class SidecarConfig(_Model):
    # lightroom: DSC_0001.xmp (Lightroom, Bridge, Capture One, Photo Mechanic, ...);
    # darktable: DSC_0001.NEF.xmp with darktable:colorlabels; digikam: DSC_0001.NEF.xmp
    # with digiKam's color and pick labels; photomechanic: DSC_0001.xmp with
    # photomechanic:ColorClass. Several at once: profiles naming one file share it.
    profiles: list[Profile] = Field(default_factory=lambda: ["lightroom"], min_length=1)


class AnalysisConfig(_Model):
    # onnxruntime execution providers: cpu, or auto (the best one onnxruntime offers).
    providers: Literal["cpu", "auto"] = "cpu"
    # Threads per onnxruntime session; 1 with several worker processes is fastest on laptops.
    threads: int = Field(1, ge=1, le=64)
    # Smallest long side (px) of the embedded preview used for analysis.
    preview_min_size: int = Field(1024, ge=160, le=8192)
    # Used only with `model: personal`: a personal model file, or a folder whose newest
    # model is used. None: the folder `postselectd train` writes to (<state_dir>/personal).
    personal_model: Path | None = None

    @field_validator("personal_model")
    @classmethod
    def _expand_model(cls, value: Path | None) -> Path | None:
        return None if value is None else Path(os.path.expandvars(str(value))).expanduser()


class TrainConfig(_Model):
    """What `postselectd train` takes for a select or a reject in the ratings you made."""

    # A select: this many stars or more (or a pick flag, or a select label).
    select_from_stars: int = Field(3, ge=1, le=5)
    # A reject: this many stars or fewer, but more than 0 (or a reject flag or label).
    # 0: stars never mean a reject.
    reject_up_to_stars: int = Field(1, ge=0, le=4)
    # Color labels by name (Lightroom text, or the colors of darktable, digiKam, Photo
    # Mechanic); Bridge's words (Select, Second, Approved, Review, To Do) work too.
    select_labels: list[str] = Field(default_factory=lambda: ["Green"])
    reject_labels: list[str] = Field(default_factory=lambda: ["Red"])
    # darktable gives every imported photo 1 star, so there 1 star means "not rated yet"
    # unless this is true (reject in darktable with its reject flag or a red label).
    darktable_one_star_is_reject: bool = False
    # The threshold is chosen on held-out shoots so that this share of your selects is
    # kept: losing a good frame is worse than looking at a bad one.
    target_recall: float = Field(0.95, ge=0.5, le=0.999)
    # With `model: personal`, may a shipped reason (eyes closed, blur, exposure) still make
    # a frame your model would keep a reject? auto: yes, unless your ratings show you keep
    # such frames (5 of your selects, 2% of them, in 3 shoots, carry the reason, and on
    # shoots it did not see your model kept them without your rejects that carry it): then
    # your model, which learnt how you weigh it, decides. true: always (as `model: default`).
    # false: never; your model decides every frame. Written into the model when trained.
    respect_reasons: Literal["auto"] | bool = "auto"

    @model_validator(mode="after")
    def _apart(self) -> TrainConfig:
        if self.reject_up_to_stars >= self.select_from_stars:
            raise ValueError(
                "must satisfy reject_up_to_stars < select_from_stars "
                f"(got {self.reject_up_to_stars}, {self.select_from_stars})"
            )
        return self


class LearnConfig(_Model):
    """How the running daemon keeps your personal model up to date from your corrections
    (a sidecar rating or label you changed from what postselectd wrote)."""

    # auto: on once a personal model exists and the daemon rates with it (model: personal);
    # true: the same (there is nothing to learn into without a model); false: never.
    enabled: Literal["auto"] | bool = "auto"
    # Train again once this many corrections came in since the last try.
    after_corrections: int = Field(50, ge=1, le=100_000)
    # ... or once a shoot is finished: at least ``min_corrections`` corrections came in, and
    # for this long no photo arrived and nothing was corrected. 0: only after_corrections.
    after_quiet_minutes: float = Field(120, ge=0, le=10080)
    min_corrections: int = Field(10, ge=1, le=100_000)


class DaemonConfig(_Model):
    """How `postselectd run` decides a file is complete, and how hard it works."""

    # A file is rated once its size and modification time stayed unchanged this long.
    # After the writer's close is seen (Linux), a short recheck is enough.
    settle_seconds: float = Field(2.0, ge=0.05, le=600)
    # A raw whose own offsets put a preview past its end may still be being written (a
    # copy in pieces, closed between them): it is not rated until it has not changed for
    # this long, then it is rated as it is (a file cut short still gets its verdict).
    # 0: rated at once from what is there.
    incomplete_wait_seconds: float = Field(30.0, ge=0, le=3600)
    # Reconcile scan of every watched folder (also at start-up and after lost events).
    # 0 turns the periodic scan off.
    rescan_interval_minutes: float = Field(60, ge=0, le=10080)
    # Worker processes for decoding and analysis: auto is one per core (at most 8).
    workers: Literal["auto"] | int = "auto"
    # A file that cannot be read is retried this many times, then left as failed.
    max_retries: int = Field(3, ge=0, le=20)
    # Wait before the first retry; it doubles for each further one.
    retry_backoff_seconds: float = Field(10.0, ge=0.01, le=86400)
    # File events waiting to be looked at; a full queue makes the watchers wait.
    queue_size: int = Field(1000, ge=10, le=1_000_000)

    @field_validator("workers")
    @classmethod
    def _workers(cls, value: Literal["auto"] | int) -> Literal["auto"] | int:
        if value != "auto" and not 1 <= value <= 64:
            raise ValueError("must be auto or a number from 1 to 64")
        return value


class Config(_Model):
    watch: list[WatchFolder] = Field(default_factory=list)
    # Where the journal and caches live; default: the per-user data folder.
    state_dir: Path | None = None
    model: Literal["default", "personal"] = "default"
    analysis: AnalysisConfig = AnalysisConfig()
    rating: RatingPolicy = RatingPolicy()
    sidecar: SidecarConfig = SidecarConfig()
    daemon: DaemonConfig = DaemonConfig()
    train: TrainConfig = TrainConfig()
    learn: LearnConfig = LearnConfig()
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("state_dir")
    @classmethod
    def _expand_state(cls, value: Path | None) -> Path | None:
        return None if value is None else Path(os.path.expandvars(str(value))).expanduser()

    def resolved_state_dir(self) -> Path:
        return self.state_dir or user_data_dir()

    def personal_models_dir(self) -> Path:
        """Where `postselectd train` writes personal models (and their model cards)."""
        return self.resolved_state_dir() / "personal"

    @model_validator(mode="after")
    def _personal_model(self) -> Config:
        # The worker processes get only the analysis section, so it carries the model
        # choice: a personal model location with `model: personal`, none otherwise.
        wanted = self.analysis.personal_model or self.personal_models_dir()
        chosen = wanted if self.model == "personal" else None
        if chosen != self.analysis.personal_model:
            analysis = self.analysis.model_copy(update={"personal_model": chosen})
            object.__setattr__(self, "analysis", analysis)  # frozen: set once, while validating
        return self


def user_config_dir() -> Path:
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / APP
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / APP


def user_data_dir() -> Path:
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / APP
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / APP


def user_cache_dir() -> Path:
    """What can be made again (onnxruntime's optimized models): nothing here is required."""
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / APP
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / APP


def default_inbox() -> Path:
    """What `postselectd run` watches when no folder is configured."""
    return Path.home() / "Pictures" / "postselectd-inbox"


def user_config_file() -> Path:
    return user_config_dir() / "config.yaml"


def _keys_at(loc: tuple) -> list[str]:
    """The keys the config takes at ``loc`` (("sidecar",) -> profiles, ...), for "did you
    mean"; [] where the path leads to no section."""
    model: object = Config
    for part in loc:
        if isinstance(part, int):
            continue  # an item of a list: its type was taken with the list below
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return []
        model = fields[part].annotation
        while not hasattr(model, "model_fields") and typing.get_args(model):
            model = next(
                (a for a in typing.get_args(model) if hasattr(a, "model_fields")),
                typing.get_args(model)[0],
            )
    return list(getattr(model, "model_fields", {}))


def _describe(error: dict) -> str:
    where = ".".join(str(part) for part in error["loc"]) or "(top level)"
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "literal_error":
        choices = ctx.get("expected", "")
        # pydantic says "'lightroom' or 'darktable'"; say it as a list of words.
        words = [w.strip(" '\"") for w in choices.replace(" or ", ",").split(",") if w.strip()]
        reason = "must be one of " + ", ".join(words)
    elif kind == "extra_forbidden":
        close = difflib.get_close_matches(str(error["loc"][-1]), _keys_at(error["loc"][:-1]), 1)
        reason = f"unknown key (did you mean '{close[0]}'?)" if close else "unknown key (misspelt?)"
    elif kind == "missing":
        reason = "is required"
    else:
        reason = error["msg"]
        if reason.startswith("Value error, "):
            reason = reason[len("Value error, ") :]
    return f"{where}: {reason}"


def parse_config(data: object, source: str = "config") -> Config:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: must be a mapping of keys to values, not {type(data).__name__}"
        )
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        lines = [_describe(e) for e in exc.errors()]
        raise ConfigError(f"{source}: " + "; ".join(lines)) from None


def load_config(path: Path | None = None) -> tuple[Config, str]:
    """Return the config and where it came from (a path, or "built-in defaults")."""
    if path is None:
        candidate = user_config_file()
        if not candidate.exists():
            return Config(), "built-in defaults"
        path = candidate
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: config is not UTF-8 text") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    return parse_config(data, str(path)), str(path)


def lenient_state_dir(path: Path | None = None) -> Path:
    """The state folder a config names, read from a config that is not valid as a whole:
    `postselectd status` needs only the journal, and a typo elsewhere in the file must not
    hide what the daemon did. The default folder where the file names none, or cannot be
    read at all."""
    try:
        path = path or user_config_file()
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        return Config(state_dir=data["state_dir"]).resolved_state_dir()
    except (OSError, UnicodeDecodeError, yaml.YAMLError, TypeError, KeyError, ValidationError):
        return user_data_dir()
