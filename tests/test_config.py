"""Config: one typed model; bad values fail at load time with the field's path."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import ROOT, run_cli

from postselectd.config import Config, ConfigError, load_config, parse_config


def test_example_config_documents_exactly_the_defaults():
    data = yaml.safe_load((ROOT / "config.example.yaml").read_text())
    assert parse_config(data) == Config()


def test_example_config_mentions_every_key():
    text = (ROOT / "config.example.yaml").read_text()

    def keys(model, prefix=""):
        for name, field in model.model_fields.items():
            yield name
            annotation = field.annotation
            if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
                yield from keys(annotation)

    for key in keys(Config):
        assert f"{key}:" in text, f"config.example.yaml does not document {key}"


def test_bad_profile_names_the_field_and_the_choices():
    with pytest.raises(ConfigError) as info:
        parse_config({"sidecar": {"profiles": ["lightroom", "acdsee"]}})
    assert "sidecar.profiles.1: must be one of lightroom, darktable" in str(info.value)


def test_misspelt_key_is_an_error_not_ignored():
    with pytest.raises(ConfigError, match=r"rating.select_treshold: unknown key"):
        parse_config({"rating": {"select_treshold": 0.8}})


@pytest.mark.parametrize(
    "data, expected",
    [
        ({"sidecar": {"profile": []}}, "sidecar.profile: unknown key (did you mean 'profiles'?)"),
        ({"watch": [{"paht": "/x"}]}, "watch.0.paht: unknown key (did you mean 'path'?)"),
        ({"rating": {"select_treshold": 0.8}}, "(did you mean 'select_threshold'?)"),
        ({"zzz": 1}, "zzz: unknown key (misspelt?)"),
    ],
)  # fmt: skip
def test_a_misspelt_key_names_the_key_it_is_close_to(data, expected):
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert expected in str(info.value)


def test_thresholds_must_be_ordered():
    with pytest.raises(ConfigError, match="two_stars_from <= three_stars_from <= select_threshold"):
        parse_config({"rating": {"three_stars_from": 0.95}})


def test_out_of_range_threshold():
    with pytest.raises(ConfigError, match=r"rating.select_threshold: .*less than or equal to 1"):
        parse_config({"rating": {"select_threshold": 1.5}})


def test_yaml_syntax_error_says_where(tmp_path: Path):
    bad = tmp_path / "config.yaml"
    bad.write_text("rating:\n  select_threshold: [0.9\n")
    with pytest.raises(ConfigError, match=r"not valid YAML \(line \d+, column \d+\)"):
        load_config(bad)


def test_no_config_file_means_built_in_defaults(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    config, source = load_config(None)
    assert source == "built-in defaults" and config == Config()


def test_user_config_file_is_used(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    (tmp_path / "postselectd").mkdir()
    (tmp_path / "postselectd" / "config.yaml").write_text("sidecar:\n  profiles: [darktable]\n")
    config, source = load_config(None)
    assert config.sidecar.profiles == ["darktable"]
    assert source.endswith("postselectd/config.yaml")


def test_watch_paths_expand_home(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("HOME", str(tmp_path))
    config = parse_config({"watch": [{"path": "~/Pictures/Import"}]})
    assert config.watch[0].path == tmp_path / "Pictures" / "Import"
    assert config.watch[0].poll == "auto"


def test_bad_config_exits_2_with_the_message(tmp_path: Path):
    bad = tmp_path / "config.yaml"
    bad.write_text("sidecar:\n  profiles: [capture-one]\n")
    result = run_cli("score", "--config", str(bad), str(tmp_path))
    assert result.returncode == 2
    assert "sidecar.profiles.0: must be one of lightroom, darktable" in result.stderr
    assert "Traceback" not in result.stderr


def test_strictness_one_word_for_all_or_one_per_family():
    every = parse_config({"rating": {"strictness": "gentle"}}).rating.strictness
    assert (every.eyes, every.focus, every.exposure) == ("gentle", "gentle", "gentle")
    some = parse_config({"rating": {"strictness": {"eyes": "off"}}}).rating.strictness
    assert (some.eyes, some.focus, some.exposure) == ("off", "normal", "normal")


def test_an_unquoted_off_in_yaml_means_off(tmp_path: Path):
    """PyYAML reads `focus: off` as false; a photographer means the word."""
    config = tmp_path / "config.yaml"
    config.write_text("rating:\n  strictness:\n    focus: off\n    eyes: gentle\n")
    strictness = load_config(config)[0].rating.strictness
    assert (strictness.focus, strictness.eyes, strictness.exposure) == ("off", "gentle", "normal")
    config.write_text("rating:\n  strictness: off\n")
    strictness = load_config(config)[0].rating.strictness
    assert (strictness.focus, strictness.eyes, strictness.exposure) == ("off",) * 3
    with pytest.raises(ConfigError, match="rating.strictness.focus: must be one of"):
        parse_config({"rating": {"strictness": {"focus": True}}})  # `on` is not a strictness


def test_bad_strictness_names_the_field_and_the_choices():
    expected = r"rating.strictness.focus: must be one of off, gentle, normal, strict"
    with pytest.raises(ConfigError, match=expected):
        parse_config({"rating": {"strictness": {"focus": "harsh"}}})
