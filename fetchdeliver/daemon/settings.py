"""The daemon's configuration tables: [daemon], [spool] and [[watch]].

    [daemon]
    poll = "5m"              # default interval for accounts without their own `poll`
    jitter = 0.1             # each interval is stretched or shrunk by up to this fraction
    backoff_max = "1h"       # longest wait after repeated failures
    idle_renew = "25m"       # IDLE is re-issued after this (servers drop it at 30 minutes)
    reload = true            # reload when the config file or a Sieve script changes on disk

    [spool]
    dir = "~/Mail/spool"     # drop a message file in: it is delivered, then removed
    rules = "..."            # each of these defaults to the [delivery] setting
    maildir = "..."  / mbox = "..."
    recipient = "me@example.org"
    default_mailbox = "INBOX"

    [[watch]]
    name = "alice"
    from = ["alice@example.com", "*@boss.example"]   # addresses or shell patterns
    subject = "(?i)urgent"                           # a regular expression, searched
    accounts = ["work"]                              # default: every account (and the spool)
    command = "~/bin/sms"                            # gets SENDER, SUBJECT, FOLDER, ... ; message on stdin
    mailto = "me@phone.example"                      # a notification mail through the SMTP queue
    rate_limit = "10/1m"                             # at most 10 runs per minute per rule
"""

from __future__ import annotations

from fetchdeliver import config
from fetchdeliver.errors import ConfigError


def _fraction(v, where):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 0.5:
        raise ValueError(f"expected a number between 0 and 0.5 (a fraction of the interval), got {v!r}")
    return float(v)


def _positive_duration(v, where):
    v = config.check_duration(v, where)
    if v < 1:
        raise ValueError(f"must be at least 1 second, got {v}")
    return v


def parse_rate(text: str) -> tuple[int, int]:
    """'10/1m' -> (10, 60): at most 10 events per 60 seconds."""
    count, sep, window = text.partition("/")
    if not sep or not count.strip().isdigit() or int(count) < 1:
        raise ValueError(f"expected COUNT/DURATION such as \"10/1m\", got {text!r}")
    seconds = config.parse_duration(window if window.strip()[:1].isdigit() else "1" + window.strip())
    if seconds < 1:
        raise ValueError(f"the window of {text!r} must be at least 1 second")
    return int(count), seconds


def _rate(v, where):
    v = config.check_nonempty_str(v, where)
    parse_rate(v)
    return v


def _regex(v, where):
    import re

    v = config.check_nonempty_str(v, where)
    try:
        re.compile(v)
    except re.error as e:
        raise ValueError(f"not a valid regular expression: {e}") from None
    return v


def _nonempty_list(v, where):
    v = config.check_str_list(v, where)
    if not v or not all(x.strip() for x in v):
        raise ValueError("expected one or more non-empty strings")
    return v


DAEMON_KEYS = {
    "poll": _positive_duration,
    "jitter": _fraction,
    "backoff_max": _positive_duration,
    "idle_renew": _positive_duration,
    "reload": config.check_bool,
}

SPOOL_KEYS = {
    "dir": config.check_path,
    "rules": config.check_path,
    "maildir": config.check_path,
    "mbox": config.check_path,
    "recipient": config.check_nonempty_str,
    "default_mailbox": config.check_nonempty_str,
}

WATCH_KEYS = {
    "name": config.check_nonempty_str,
    "from": _nonempty_list,
    "subject": _regex,
    "accounts": _nonempty_list,
    "command": config.check_nonempty_str,
    "mailto": _nonempty_list,
    "rate_limit": _rate,
}

DEFAULTS = {"poll": 300, "jitter": 0.1, "backoff_max": 3600, "idle_renew": 25 * 60, "reload": True}


def _check_daemon(t: dict, file: str) -> None:
    if t.get("idle_renew", 0) >= 29 * 60:
        raise ConfigError("must be below 29 minutes (servers may drop IDLE at 30)", file=file,
                          key="daemon.idle_renew")


def _check_spool(t: dict, file: str) -> None:
    if "dir" not in t:
        raise ConfigError("missing required key", file=file, key="spool.dir")
    if "maildir" in t and "mbox" in t:
        raise ConfigError("set either maildir or mbox, not both", file=file, key="spool.mbox")


def _check_watch(rules: list, file: str) -> None:
    for i, w in enumerate(rules):
        label = f"watch[{i}]" + (f" ({w['name']})" if "name" in w else "")
        if "from" not in w and "subject" not in w:
            raise ConfigError("a watch rule needs `from` or `subject` (or both) to match on", file=file,
                              key=f"{label}.from")
        if "command" not in w and "mailto" not in w:
            raise ConfigError("a watch rule needs `command` or `mailto` (or both) to notify", file=file,
                              key=f"{label}.command")


config.register_table("daemon", DAEMON_KEYS, _check_daemon)
config.register_table("spool", SPOOL_KEYS, _check_spool)
config.register_array_table("watch", WATCH_KEYS, rule=_check_watch)


def daemon_options(settings) -> dict:
    """The [daemon] table with defaults applied."""
    out = dict(DEFAULTS)
    out.update(settings.data.get("daemon") or {})
    return out
