"""How the daemon decides which folders are pushed (NOTIFY, IDLE per folder) and which are polled."""

from __future__ import annotations

from types import SimpleNamespace

from fetchdeliver.daemon.idle import POLLED, PUSHED, Watcher, plan_push
from fetchdeliver.sources.imap import mailbox_name, quote_mailbox

FOLDERS = ["INBOX", "Work", "Lists", "Family", "Old", "Older"]
IDLE_ONLY = {b"IMAP4REV1", b"IDLE"}
NOTIFY = IDLE_ONLY | {b"NOTIFY"}


def states(plans):
    return [p.state for p in plans]


def test_notify_pushes_every_folder_on_one_connection():
    kind, plans = plan_push(FOLDERS, NOTIFY, max_connections=5, poll="5m")
    assert kind == "notify"
    assert states(plans) == [PUSHED] * 6
    assert plans[0].why == "NOTIFY, one connection for all 6 folders"


def test_idle_per_folder_up_to_the_budget_one_connection_kept_for_fetching():
    kind, plans = plan_push(FOLDERS, IDLE_ONLY, max_connections=5, poll="5m")
    assert kind == "idle"
    assert states(plans) == [PUSHED] * 4 + [POLLED] * 2
    assert plans[3].why == "IDLE connection 4 of 4, no NOTIFY on the server"
    assert plans[4].why == ("max_connections = 5: 4 IDLE connections and one for fetching are in use, "
                            "no NOTIFY on the server; polled every 5m")
    kind, plans = plan_push(FOLDERS[:2], IDLE_ONLY, max_connections=5)
    assert states(plans) == [PUSHED, PUSHED]


def test_notify_turned_off_falls_back_to_idle():
    kind, plans = plan_push(FOLDERS[:3], NOTIFY, max_connections=2, use_notify=False, poll="1h")
    assert kind == "idle" and states(plans) == [PUSHED, POLLED, POLLED]
    assert plans[0].why.endswith("notify = false")


def test_nothing_to_push_with():
    kind, plans = plan_push(FOLDERS[:2], {b"IMAP4REV1"}, max_connections=5, poll="5m")
    assert kind == "none" and states(plans) == [POLLED, POLLED]
    assert "neither NOTIFY nor IDLE" in plans[0].why
    kind, plans = plan_push(FOLDERS[:2], NOTIFY, max_connections=1, poll="5m")
    assert kind == "none" and "max_connections = 1 leaves no connection for push" in plans[0].why
    kind, plans = plan_push(FOLDERS[:2], None, max_connections=5, poll="5m")
    assert kind == "none" and plans[1].why == "push is connecting; polled every 5m until then"


def _watcher(folders, notify=True):
    acc = SimpleNamespace(name="a", folders=folders)
    return Watcher(acc, folders, notify=notify, on_mail=None, on_state=None, renew=60)


def test_status_notifications_name_folders_with_new_mail_only():
    w = _watcher(["INBOX", "Work", "Caf\u00e9"])

    def st(box, uidnext, uv=7):
        return (b"STATUS", box, (b"MESSAGES", 1, b"UIDNEXT", uidnext, b"UIDVALIDITY", uv))

    # Two notifications for one folder in one read: the folder is named once, not cancelled by the second.
    assert w._news([st(b"INBOX", 2), st(b"INBOX", 2), st(b"Work", 1)]) == {"INBOX", "Work"}
    assert w._news([st(b"INBOX", 2)]) == set()             # an expunge: UIDNEXT did not grow
    assert w._news([st(b"INBOX", 3)]) == {"INBOX"}
    assert w._news([st(b"INBOX", 1, uv=8)]) == {"INBOX"}   # a new UIDVALIDITY
    assert w._news([st(b"Caf&AOk-", 5), st(b"Other", 9)]) == {"Caf\u00e9"}   # modified UTF-7; unknown folder
    assert w._news([(b"STATUS", b"Work", (b"MESSAGES", 4))]) == {"Work"}    # no UIDNEXT: fetch to be sure
    idle = _watcher(["Work"], notify=False)
    assert idle._news([(3, b"EXISTS")]) == {"Work"} and idle._news([(1, b"EXPUNGE")]) == set()


def test_mailbox_names_on_the_wire():
    assert quote_mailbox("Caf\u00e9") == '"Caf&AOk-"'
    assert quote_mailbox('a "b" \\c') == '"a \\"b\\" \\\\c"'
    assert mailbox_name(2024) == "2024" and mailbox_name(b"Caf&AOk-") == "Caf\u00e9"


def test_push_keys_in_the_config():
    import pytest

    from fetchdeliver.sources.accounts import Account
    from fetchdeliver.config import ConfigErrors, validate

    acc = {"name": "a", "protocol": "imap", "host": "h", "user": "u", "password": "p", "idle": True}
    out = validate({"account": [dict(acc, max_connections=2, notify=False)]}, "/cfg.toml")
    a = Account(out["account"][0])
    assert (a.max_connections, a.notify, a.idle) == (2, False, True)
    assert Account(validate({"account": [acc]}, "/cfg.toml")["account"][0]).max_connections == 5
    with pytest.raises(ConfigErrors) as e:
        validate({"account": [dict(acc, max_connections=0)]}, "/cfg.toml")
    assert "account[0] (a).max_connections" in str(e.value)
    with pytest.raises(Exception) as e:
        validate({"account": [dict(acc, protocol="pop3", idle=False, notify=True)]}, "/cfg.toml")
    assert "account[0] (a).notify: only used by IMAP push" in str(e.value)
