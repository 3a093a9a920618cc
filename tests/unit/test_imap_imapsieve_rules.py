"""imapsieve (RFC 6785) in the IMAP server: which rules match an event, the order of the scripts
(before, the user's, after), and the [[imapsieve.mailbox]] checks with the key named."""

from __future__ import annotations

import pytest

from fetchdeliver.imapserver.imapsieve import ImapSieveConfig, Rule, check_rules


def test_rule_matching():
    junk = Rule("Junk", ("COPY", "APPEND"), before="/s/spam.sieve")
    out_of_junk = Rule("*", ("COPY",), before="/s/ham.sieve", from_="Junk")
    flags = Rule("INBOX", ("FLAG",), after="/s/flag.sieve")
    assert junk.matches("COPY", "Junk", "INBOX") and junk.matches("APPEND", "Junk", None)
    assert not junk.matches("FLAG", "Junk", None) and not junk.matches("COPY", "junk", "INBOX")
    assert out_of_junk.matches("COPY", "Archive/2025", "Junk")
    assert not out_of_junk.matches("COPY", "Archive", "INBOX")
    assert not out_of_junk.matches("APPEND", "Archive", None)      # `from` is for COPY only
    assert flags.matches("FLAG", "inbox", None)                    # INBOX in any case
    assert Rule("Lists/*", ("APPEND",), before="x").matches("APPEND", "Lists/python", None)
    assert not Rule("Lists/?", ("APPEND",), before="x").matches("APPEND", "Lists/ab", None)


def test_script_order():
    cfg = ImapSieveConfig([Rule("*", ("COPY",), before="/a-before", after="/a-after"),
                           Rule("Junk", ("COPY",), before="/b-before"),
                           Rule("Junk", ("APPEND",), before="/not-this")])
    assert cfg.scripts_for("COPY", "Junk", "INBOX", "/user.sieve") == \
        ["/a-before", "/b-before", "/user.sieve", "/a-after"]
    assert cfg.scripts_for("FLAG", "Junk", None) == []


@pytest.mark.parametrize("tables, message", [
    ([{"causes": ["COPY"], "before": "x"}], "rule 1: `name`"),
    ([{"name": "Junk", "causes": ["MOVE"], "before": "x"}], "'MOVE' is not one of APPEND, COPY, FLAG"),
    ([{"name": "Junk"}], "rule 1: give `before` and/or `after`"),
    ([{"name": "Junk", "before": "x", "script": "y"}], "unknown key 'script'"),
    ([{"name": "Junk", "before": "x"}, {"name": "Spam", "from": "", "after": "y"}], "rule 2: from"),
    ("Junk", "expected [[imapsieve.mailbox]] tables"),
])
def test_config_errors(tables, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(")):
        check_rules(tables, "/etc/fetchdeliver/config.toml")


def test_config_normalises(tmp_path):
    [rule] = check_rules([{"name": "Junk", "causes": "copy append", "before": "spam.sieve"}],
                         str(tmp_path / "config.toml"))
    assert rule == {"name": "Junk", "causes": ["COPY", "APPEND"], "before": str(tmp_path / "spam.sieve")}
