"""The Source protocol, the registry of source kinds and the protocol-agnostic account runner.

A source registered at run time (as a plugin's entry point would be) goes through the same
runner as IMAP and POP3: delivered durably before `ack`, `release` on a temporary failure,
nothing acked or recorded in a dry run, a second pass finds nothing new.
"""

import hashlib
import io
import os
import time

import pytest

from fetchdeliver.config import ConfigError, Settings, parse_file
from fetchdeliver.sources import registry
from fetchdeliver.sources.accounts import Account
from fetchdeliver.sources.base import Fetched, SourceKind
from fetchdeliver.sources.runner import AccountRun
from fetchdeliver.state import State


def message(i: int) -> bytes:
    return (f"Return-Path: <sender{i}@example.org>\r\nMessage-ID: <m{i}@example.org>\r\n"
            f"Subject: message {i}\r\n\r\nbody {i}\r\n").encode()


class MemorySource:
    """A source whose mailbox is a dict in memory (uid -> bytes); `ack` removes, as POP3 DELE would.

    It records every ack and release with what was on disk at that moment, so the tests can check
    the runner's order. Its own memory is the state database's POP3 table (uids without folders),
    which is what a plugin source without folders would use."""

    mailboxes: dict[str, dict[str, bytes]] = {}

    def __init__(self, account) -> None:
        self.account = account
        self.box = self.mailboxes[account.name]
        self.calls: list[tuple[str, list, int]] = []
        self.connected = False
        MemorySource.last = self

    def delivered_files(self) -> int:
        root = self.account.maildir
        return sum(len(os.listdir(os.path.join(root, d))) for d in ("new", "cur")
                   if os.path.isdir(os.path.join(root, d)))

    def connect(self) -> None:
        self.connected = True

    def batches(self, run):
        seen = run.state.pop3_seen(run.account_name)
        todo = [uid for uid in sorted(self.box) if uid not in seen]
        run.expect(len(todo))
        for i in range(0, len(todo), 2):
            yield [Fetched(uid, self.box[uid], uid) for uid in todo[i:i + 2]]

    def ack(self, handles) -> None:
        self.calls.append(("ack", list(handles), self.delivered_files()))
        if self.account.after == "delete":
            for h in handles:
                del self.box[h]

    def release(self, handles) -> None:
        self.calls.append(("release", list(handles), self.delivered_files()))

    def close(self, *, quit: bool = True) -> None:
        self.connected = False


MEMORY = SourceKind("memory", MemorySource, default_ports={"implicit": 1, "starttls": 1, "none": 1},
                    received_with="MEMORY")


@pytest.fixture(autouse=True)
def memory_kind():
    registry.register(MEMORY)
    MemorySource.mailboxes.clear()
    yield
    registry._loaded.pop("memory", None)


def settings(tmp_path, **account):
    acc = {"name": "mem", "protocol": "memory", "host": "localhost", "tls": "none", "user": "me", "password": "x",
           "maildir": str(tmp_path / "Mail"), "recipient": "me@example.org", "after": "delete"}
    acc.update(account)
    return Settings({"delivery": {"maildir": str(tmp_path / "Mail"), "state_dir": str(tmp_path / "state"),
                                  "cache_dir": str(tmp_path / "cache")}, "account": [acc]})


def run_once(s, **kw):
    account = Account(s.data["account"][0], s)
    out, err = io.StringIO(), io.StringIO()
    with State(s.state_dir) as state:
        run = AccountRun(account, s, state, out=out, err=err, **kw)
        ok = run.run()
    return ok, run, out.getvalue(), err.getvalue()


def maildir_messages(root) -> list[bytes]:
    out = []
    for d in ("new", "cur"):
        p = os.path.join(root, d)
        for name in sorted(os.listdir(p)) if os.path.isdir(p) else ():
            with open(os.path.join(p, name), "rb") as f:
                out.append(f.read())
    return out


def test_a_registered_source_is_run_like_imap_and_pop3(tmp_path):
    s = settings(tmp_path)
    MemorySource.mailboxes["mem"] = {f"u{i}": message(i) for i in range(5)}
    ok, run, out, err = run_once(s)
    assert ok, err
    assert "mem: 5 fetched, 5 delivered, 0 duplicates skipped, 0 failed" in out
    src = MemorySource.last
    # Every ack comes after its messages are on disk (three batches: 2 + 2 + 1).
    assert [c[0] for c in src.calls] == ["ack", "ack", "ack"]
    assert [c[2] for c in src.calls] == [2, 4, 5]
    assert MemorySource.mailboxes["mem"] == {}
    stored = maildir_messages(str(tmp_path / "Mail"))
    assert len(stored) == 5
    for raw in stored:
        first = raw.split(b"\n", 1)[0]
        assert first.startswith(b"Received: from localhost by ") and b" with MEMORY (fetchdeliver; account mem) " \
            in first
        assert raw.split(b"\n", 1)[1].replace(b"\n", b"\r\n") in {message(i) for i in range(5)}


def test_a_second_pass_delivers_nothing_twice(tmp_path):
    s = settings(tmp_path, after="keep")
    MemorySource.mailboxes["mem"] = {f"u{i}": message(i) for i in range(3)}
    assert run_once(s)[0]
    ok, run, out, err = run_once(s)
    assert ok and "0 fetched, 0 delivered" in out, out + err
    # Forgotten by its uid (new uid, same bytes): the duplicate memory still knows it, and acks it.
    MemorySource.mailboxes["mem"] = {"other": message(1)}
    ok, run, out, err = run_once(s)
    assert ok and "1 fetched, 0 delivered, 1 duplicates skipped" in out, out + err
    assert MemorySource.last.calls == [("ack", ["other"], 3)]
    assert len(maildir_messages(str(tmp_path / "Mail"))) == 3


def test_a_temporary_delivery_failure_releases_the_message_and_records_nothing(tmp_path):
    blocker = tmp_path / "Mail"
    blocker.write_text("a file where the Maildir should be")   # every delivery fails temporarily
    s = settings(tmp_path)
    MemorySource.mailboxes["mem"] = {"u1": message(1), "u2": message(2)}
    ok, run, out, err = run_once(s)
    assert not ok
    assert "mem: 2 fetched, 0 delivered, 0 duplicates skipped, 2 failed" in out
    assert "message u1: not delivered, left on the server for the next run" in err
    assert MemorySource.last.calls == [("release", ["u1", "u2"], 0)]
    assert set(MemorySource.mailboxes["mem"]) == {"u1", "u2"}
    # Once the store works, the next pass delivers both: nothing was recorded as delivered.
    blocker.unlink()
    ok, run, out, err = run_once(s)
    assert ok and "2 delivered" in out, out + err
    assert len(maildir_messages(str(blocker))) == 2


def test_a_dry_run_acks_nothing_and_records_nothing(tmp_path):
    s = settings(tmp_path)
    MemorySource.mailboxes["mem"] = {"u1": message(1)}
    ok, run, out, err = run_once(s, dry_run=True)
    assert ok, err
    assert "dry run: nothing was delivered, recorded or changed on the server" in out
    assert [c[0] for c in MemorySource.last.calls] == ["release"]
    assert maildir_messages(str(tmp_path / "Mail")) == []
    ok, run, out, err = run_once(s)
    assert ok and "1 delivered" in out


def write_config(tmp_path, protocol, extra=""):
    p = tmp_path / "config.toml"
    p.write_text(f'[[account]]\nname = "a"\nprotocol = "{protocol}"\nhost = "h"\nuser = "u"\npassword = "p"\n'
                 + extra)
    return str(p)


def test_the_schema_takes_registered_protocols_and_names_the_known_ones(tmp_path):
    data = parse_file(write_config(tmp_path, "memory"))
    assert data["account"][0]["protocol"] == "memory"
    with pytest.raises(ConfigError) as e:
        parse_file(write_config(tmp_path, "smoke-signals"))
    text = str(e.value)
    assert "protocol" in text and "'imap'" in text and "'pop3'" in text and "'memory'" in text
    assert "'smoke-signals'" in text


def test_what_a_kind_cannot_do_is_refused_by_the_schema(tmp_path):
    with pytest.raises(ConfigError) as e:
        parse_file(write_config(tmp_path, "memory", 'after = "mark-seen"\n'))
    assert 'MEMORY accounts take "keep" or "delete", not \'mark-seen\'' in str(e.value)
    with pytest.raises(ConfigError) as e:
        parse_file(write_config(tmp_path, "memory", 'folders = ["INBOX"]\n'))
    assert "MEMORY has no folders; remove this key" in str(e.value)
    with pytest.raises(ConfigError) as e:
        parse_file(write_config(tmp_path, "memory", "idle = true\n"))
    assert "IDLE is an IMAP feature; remove it from a MEMORY account" in str(e.value)
    # The default port comes from the kind.
    (acc,) = [Account(t) for t in parse_file(write_config(tmp_path, "imap", 'tls = "starttls"\n'))["account"]]
    assert acc.port == 143 and acc.kind is registry.IMAP


def test_the_built_in_kinds_are_also_entry_points():
    from importlib.metadata import entry_points

    eps = {ep.name: ep.load() for ep in entry_points(group=registry.ENTRY_POINT_GROUP)}
    assert eps["imap"] is registry.IMAP and eps["pop3"] is registry.POP3
    assert {"imap", "pop3", "memory"} <= set(registry.available())


def test_the_spool_source_takes_settled_files_and_removes_only_what_is_acked(tmp_path):
    from fetchdeliver.sources import spool

    d = tmp_path / "spool"
    d.mkdir()
    for name in ("a.eml", "b.eml", ".hidden", "c.tmp"):
        (d / name).write_bytes(message(1 if name == "a.eml" else 2))
        os.utime(d / name, (1, 1))                 # long settled
    (d / "young.eml").write_bytes(message(3))      # still being written: not taken yet
    os.utime(d / "young.eml", (time.time() + 3600, time.time() + 3600))
    with State(str(tmp_path / "state")) as state:
        src = spool.SpoolSource(str(d), recipient="me@example.org", state=state)
        src.connect()
        batches = list(src.batches())
        assert [[f.uid for f in b] for b in batches] == [["a.eml"], ["b.eml"]] and src.young
        a, b = batches[0][0], batches[1][0]
        assert a.envelope.sender == "sender1@example.org" and a.envelope.recipients == ["me@example.org"]
        src.ack([a.handle])
        src.release([b.handle])
        assert sorted(os.listdir(d)) == [".hidden", "b.eml", "c.tmp", "young.eml"]
        # A crash between a durable delivery and the unlink: the next scan removes, not delivers.
        digest = f"{hashlib.sha256(message(2)).hexdigest()}:b.eml"
        state.remember("spool", digest, spool.SPOOL_MEMORY)
        assert [f.uid for b in src.batches() for f in b] == [] and src.young
        assert "b.eml" not in os.listdir(d) and src.removed == 1


def test_an_lmtp_transaction_answers_every_recipient_in_order():
    from fetchdeliver.sources.lmtp import LmtpTransaction

    txn = LmtpTransaction(b"Subject: x\n\nbody\n", "s@example.org", ["a@x", "b@x", "c@x", "d@x"])
    (batch,) = txn.batches()
    assert [f.uid for f in batch] == ["a@x", "b@x", "c@x", "d@x"]
    txn.answer(0, "250 2.0.0 <a@x> delivered to INBOX")
    txn.ack([0])
    txn.answer(1, "452 4.3.1 <b@x> No space left on device")
    txn.release([1])
    txn.answer(2, "550 5.7.1 <c@x> not wanted")
    txn.ack([2])
    assert txn.replies() == ["250 2.0.0 <a@x> delivered to INBOX", "452 4.3.1 <b@x> No space left on device",
                             "550 5.7.1 <c@x> not wanted", "451 4.3.0 <d@x> internal error: no answer"]


def test_an_account_whose_source_is_no_longer_registered_fails_alone_with_a_clear_error(tmp_path):
    s = settings(tmp_path)
    registry._loaded.pop("memory")        # the plugin was uninstalled after the config was cached
    ok, run, out, err = run_once(s)
    assert not ok
    assert "fetchdeliver: mem: no source is registered for protocol 'memory'" in err
