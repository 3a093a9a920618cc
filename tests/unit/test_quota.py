"""storage/quota.py: Dovecot's quota rules and sizes, the maildirsize format and when it is rebuilt."""

from __future__ import annotations

import os
import time

import pytest

from fetchdeliver.config import Settings
from fetchdeliver.errors import QuotaExceeded
from fetchdeliver.storage.maildir import MaildirStore
from fetchdeliver.storage.quota import (MaildirQuota, attach_quota, format_limits, parse_limits, parse_rule,
                                        parse_size, read_maildirsize, user_rules)


@pytest.mark.parametrize("text,unit,expected", [
    ("100M", 1, 100 * 1024 ** 2), ("2G", 1, 2 * 1024 ** 3), ("10k", 1, 10240), ("5b", 1024, 5),
    ("1000", 1, 1000), ("1000", 1024, 1024000), (1000, 1, 1000),
])
def test_sizes(text, unit, expected):
    assert parse_size(text, unit) == expected


@pytest.mark.parametrize("bad", ["", "M", "1.5G", "-1", "10X", True])
def test_bad_sizes(bad):
    with pytest.raises(ValueError):
        parse_size(bad)


def test_dovecot_rules():
    assert parse_rule("*:storage=100M") == (100 * 1024 ** 2, None)
    assert parse_rule("*:storage=1000") == (1024000, None)          # storage= without a unit is KiB
    assert parse_rule("*:bytes=1000") == (1000, None)
    assert parse_rule("*:messages=50") == (None, 50)
    assert parse_rule("*:storage=1G:messages=10") == (1024 ** 3, 10)
    assert user_rules({"userdb_quota_rule": "*:storage=1M", "userdb_quota_rule2": "*:messages=5",
                       "mail": "maildir:~/M"}) == (1024 ** 2, 5)
    assert user_rules({"quota_rule": "*:storage=0"}) == (0, None)
    assert user_rules({"mail": "x"}) is None
    for bad in ("Trash:storage=+10%%", "*:storage=10%", "*:ignore", "*:weird=1", "storage=1M"):
        with pytest.raises(ValueError):
            parse_rule(bad)


def test_limits_line_as_dovecot_writes_it():
    assert format_limits(1024, None) == "1024S"
    assert format_limits(None, 10) == "10C"
    assert format_limits(1024, 10) == "1024S,10C"
    assert format_limits(None, None) == "0S"
    assert parse_limits("1024S,10C") == (1024, 10)
    assert parse_limits("0S") == (None, None)
    assert parse_limits("garbage") is None


def write(path, text: bytes, age: float = 0) -> None:
    with open(path, "wb") as f:
        f.write(text)
    if age:
        t = time.time() - age
        os.utime(path, (t, t))


def test_reading_and_the_files_that_are_rebuilt(tmp_path):
    p = str(tmp_path / "maildirsize")
    write(p, b"1000S,5C\n300 3\n100 1\n-50 -1\n")
    f = read_maildirsize(p)
    assert (f.limits, f.bytes, f.messages, f.lines) == ((1000, 5), 350, 3, 3)
    write(p, b"1000S\n300 3\n100 1\n12")                  # an unterminated last line is not counted yet
    assert read_maildirsize(p).bytes == 400
    for broken in (b"1000S\n300 x\n", b"1000S\n-5 -1\n", b"nonsense\n1 1\n", b"1000S\n1 1\n\0\n",
                   b"1000S\n" + b"1 1\n" * 2000):
        write(p, broken)
        assert read_maildirsize(p) is None, broken
    assert read_maildirsize(str(tmp_path / "missing")) is None


def maildir(tmp_path, sizes) -> MaildirStore:
    store = MaildirStore(str(tmp_path / "Maildir"), fsync=False)
    for n in sizes:
        store.deliver(b"x" * n)
    return store


def test_over_quota_is_believed_only_from_a_fresh_count(tmp_path):
    store = maildir(tmp_path, [100, 100])
    q = MaildirQuota(store.root, lambda: (1000, None))
    path = os.path.join(store.root, "maildirsize")
    # A single total line, fresh, says full: believed (as Dovecot believes it) ...
    write(path, b"1000S\n1000 2\n")
    with pytest.raises(QuotaExceeded):
        q.check(10)
    # ... unless the Maildir changed after it: counted again, and there is room.
    os.utime(path, (time.time() - 60, time.time() - 60))
    q.check(10)
    assert read_maildirsize(path).bytes == 200
    # Several lines saying full: counted again.
    write(path, b"1000S\n900 1\n100 1\n")
    q.check(10)
    # Other limits than ours: rewritten with ours.
    write(path, b"5000S,3C\n200 2\n")
    assert q.status().bytes_limit == 1000
    assert open(path).read().startswith("1000S\n")


def test_limits_from_the_file_when_none_are_configured(tmp_path):
    store = maildir(tmp_path, [100])
    path = os.path.join(store.root, "maildirsize")
    write(path, b"150S\n100 1\n")                           # Courier's maildirmake -q 150S
    q = MaildirQuota(store.root, lambda: None)
    assert q.status().bytes_limit == 150
    with pytest.raises(QuotaExceeded):
        q.check(100)
    # No limits anywhere and no file: nothing is written.
    other = MaildirStore(str(tmp_path / "Other"), fsync=False)
    other.deliver(b"y" * 10)
    st = MaildirQuota(other.root, lambda: None).status()
    assert (st.bytes, st.messages, st.bytes_limit) == (10, 1, None)
    assert not os.path.exists(os.path.join(other.root, "maildirsize"))


def test_attach_follows_the_table_and_the_passwd_file(tmp_path):
    passwd = tmp_path / "passwd"
    passwd.write_text("alice:{PLAIN}x::::::userdb_quota_rule=*:messages=1\n")
    settings = Settings({"quota": {"storage": "1M", "passwd_file": str(passwd), "tempfail": True}}, "cfg")
    store = attach_quota(MaildirStore(str(tmp_path / "A"), fsync=False), settings, "alice@example.org")
    assert store.quota.status().bytes_limit == 1024 ** 2 and store.quota.status().messages_limit == 1
    store.deliver(b"one\n")
    with pytest.raises(QuotaExceeded) as exc:
        store.deliver(b"two\n")
    assert exc.value.temporary and exc.value.resource == "MESSAGE"
    # The passwd-file is read again when it changes.
    passwd.write_text("alice:{PLAIN}x::::::userdb_quota_rule=*:messages=5\n")
    os.utime(passwd, (time.time() + 5, time.time() + 5))
    store.deliver(b"two\n")
    # Without [quota], nothing is attached.
    plain = attach_quota(MaildirStore(str(tmp_path / "B"), fsync=False), Settings({}, "cfg"))
    assert plain.quota is None


def test_config_errors_name_the_key(tmp_path):
    from fetchdeliver.config import parse_file
    from fetchdeliver.errors import ConfigError

    cfg = tmp_path / "c.toml"
    cfg.write_text('[quota]\nstorage = "10X"\n')
    with pytest.raises(ConfigError, match="quota.storage"):
        parse_file(str(cfg))
    cfg.write_text('[quota]\nstorage = "10M"\nmessages = 5\ntempfail = true\n')
    assert parse_file(str(cfg))["quota"] == {"storage": "10M", "messages": 5, "tempfail": True}


def test_a_rule_filing_twice_is_stored_whole_or_not_at_all(tmp_path):
    from fetchdeliver import engine, sieve
    from fetchdeliver.message import Message

    store = MaildirStore(str(tmp_path / "M"), fsync=False)
    store.quota = MaildirQuota(store.root, lambda: (None, 3))
    store.deliver(b"Subject: old\n\nx\n")
    script = sieve.compile_text('require "fileinto";\nfileinto "A";\nfileinto "B";\nkeep;\n')
    ctx = engine.Context(store, script)
    out = engine.process(Message(b"Subject: new\n\nbody\n"), ctx)     # 3 copies, room for 2
    assert out.status == engine.TEMPFAIL and out.quota is not None and out.quota.resource == "MESSAGE"
    st = store.quota.status()
    assert st.messages == 1                                               # the copies made were rolled back
    assert sum(len(store.open(n).sync()) for n in store.list_mailboxes()) == 1


def test_grace_lets_the_last_message_past_the_limit_only_from_below():
    from fetchdeliver.storage.base import QuotaStatus

    st = QuotaStatus("r", 900, 1, 1000, None)
    assert st.over_by(150) == "STORAGE" and st.over_by(150, grace=100) is None
    assert st.over_by(250, grace=100) == "STORAGE"
    assert QuotaStatus("r", 1000, 1, 1000, None).over_by(1, grace=100) == "STORAGE"   # at the limit: no grace
    q = MaildirQuota("/nonexistent", lambda: (1000, None))
    q.grace = "10%"
    assert q.grace_bytes(st) == 100
    q.grace = 64
    assert q.grace_bytes(st) == 64


def test_grace_config(tmp_path):
    from fetchdeliver.config import parse_file
    from fetchdeliver.errors import ConfigError
    from fetchdeliver.storage.quota import settings_for

    cfg = tmp_path / "c.toml"
    for text, expected in (('"10%"', "10%"), ('"1M"', 1024 ** 2), ("4096", 4096)):
        cfg.write_text(f"[quota]\nstorage = \"1G\"\ngrace = {text}\n")
        assert settings_for(Settings(parse_file(str(cfg)), str(cfg))).grace == expected
    cfg.write_text('[quota]\ngrace = "ten%"\n')
    with pytest.raises(ConfigError, match="quota.grace"):
        parse_file(str(cfg))
