"""Config validation: every error names the file, the key and the problem."""

import os

import pytest

from fetchdeliver.config import ConfigError, ConfigErrors, Settings, load, parse_duration, parse_file


def write(tmp_path, text):
    p = tmp_path / "config.toml"
    p.write_text(text)
    return str(p)


def test_valid_delivery_table(tmp_path):
    path = write(tmp_path, '[delivery]\nmaildir = "~/Mail"\nrules = "rules.sieve"\nstate_dir = "/var/x"\n')
    data = parse_file(path)
    assert data["delivery"]["maildir"] == os.path.expanduser("~/Mail")
    # relative paths are relative to the config file
    assert data["delivery"]["rules"] == str(tmp_path / "rules.sieve")
    assert Settings(data).state_dir == "/var/x"


def test_unknown_key_is_an_error_naming_file_and_key(tmp_path):
    path = write(tmp_path, '[delivery]\nmaildir = "/m"\nmaildri = "/x"\n')
    with pytest.raises(ConfigErrors) as e:
        parse_file(path)
    text = str(e.value)
    assert path in text and "delivery.maildri" in text and "unknown key" in text


def test_unknown_table_is_an_error(tmp_path):
    path = write(tmp_path, '[delivry]\nmaildir = "/m"\n')
    with pytest.raises(ConfigError) as e:
        parse_file(path)
    assert "delivry" in str(e.value)


def test_wrong_type_names_the_key(tmp_path):
    path = write(tmp_path, '[delivery]\nmaildir = 3\nfsync = "yes"\n')
    with pytest.raises(ConfigErrors) as e:
        parse_file(path)
    keys = {err.key for err in e.value.errors}
    assert keys == {"delivery.maildir", "delivery.fsync"}


def test_maildir_and_mbox_together_is_refused(tmp_path):
    path = write(tmp_path, '[delivery]\nmaildir = "/m"\nmbox = "/b"\n')
    with pytest.raises(ConfigError) as e:
        parse_file(path)
    assert "delivery.mbox" in str(e.value)


def test_bad_toml_names_the_file_and_line(tmp_path):
    path = write(tmp_path, '[delivery\nmaildir = "/m"\n')
    with pytest.raises(ConfigError) as e:
        parse_file(path)
    assert path in str(e.value) and "line 1" in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError) as e:
        load(str(tmp_path / "nope.toml"))
    assert "not found" in str(e.value)


def test_cache_is_used_and_invalidated_on_change(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = write(tmp_path, '[delivery]\nmaildir = "/one"\n')
    assert load(path)["delivery"]["maildir"] == "/one"
    assert load(path)["delivery"]["maildir"] == "/one"  # from the cache
    with open(path, "w") as f:
        f.write('[delivery]\nmaildir = "/two/longer"\n')
    assert load(path)["delivery"]["maildir"] == "/two/longer"


@pytest.mark.parametrize("text,seconds", [("30s", 30), ("5m", 300), ("1h30m", 5400), ("2d", 172800), ("45", 45)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["5x", "m", "5m3", ""])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)
