"""The outbound queue against real SMTP peers: aiosmtpd sinks as relay (STARTTLS / implicit TLS + AUTH)
and as MX hosts found through a DNS responder on 127.0.0.1; retry timing under freezegun; crashes."""

from __future__ import annotations

import email
import os
import signal
import ssl
import subprocess
import sys
import textwrap

import pytest
from lmtp_support import Server, maildir_messages, to_wire
from smtp_sinks import DNSResponder, Sink, port_free_on

from fetchdeliver.actions import Notify, Vacation
from fetchdeliver.config import Settings, parse_file
from fetchdeliver.message import Message
from fetchdeliver.outbound.queue import OutboundQueue

RAW = (b"From: Bob <bob@src.test>\nTo: alice@example.com\nSubject: hi\nMessage-ID: <m1@src.test>\n\n"
       b"Hello.\n.leading dot\n8bit \xe4\n")


@pytest.fixture
def stoppers():
    items = []
    yield items
    for s in reversed(items):
        s.stop()


@pytest.fixture(scope="module")
def ca():
    trustme = pytest.importorskip("trustme")
    return trustme.CA()


def server_context(ca, implicit=False):
    # PROTOCOL_TLS works on both sides: aiosmtpd's Controller checks an implicit-TLS sink as a client.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS) if implicit else ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
    return ctx


def make_queue(tmp_path, text: str) -> OutboundQueue:
    path = tmp_path / "config.toml"
    path.write_text(textwrap.dedent(text) + f'\n[delivery]\nstate_dir = "{tmp_path}/state"\n')
    return OutboundQueue.from_settings(Settings(parse_file(str(path)), str(path)))


def crlf(raw: bytes) -> bytes:
    return to_wire(raw)


# -- relay ------------------------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:Requiring AUTH:UserWarning")
@pytest.mark.parametrize("tls", ["starttls", "implicit"])
def test_relay_with_tls_and_auth(tmp_path, stoppers, ca, tls):
    sink = Sink(users={"me": "s3cret"}, **({"starttls_context": server_context(ca)} if tls == "starttls"
                                            else {"implicit_context": server_context(ca, implicit=True)}))
    stoppers.append(sink)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    q = make_queue(tmp_path, f"""
        [relay]
        host = "127.0.0.1"
        port = {sink.port}
        tls = "{tls}"
        user = "me"
        password_command = "printf 's3cret\\n'"
        ca_file = "{ca_file}"
        """)
    qid = q.enqueue("bob@src.test", "carol@dest.test", RAW)
    assert [i.id for i in q.items()] == [qid]
    counts = q.run_once()
    assert counts == {"sent": 1, "deferred": 0, "bounced": 0, "dropped": 0}, q.items()[0].last_error
    assert counts == {"sent": 1, "deferred": 0, "bounced": 0, "dropped": 0}
    got, = sink.messages
    assert (got.mail_from, got.rcpt_tos, got.tls, got.auth) == ("bob@src.test", ["carol@dest.test"], True, "me")
    assert got.data == crlf(RAW)  # byte-exact, dot-stuffing undone by the sink
    assert q.items() == [] and os.listdir(q.msg_dir) == []


def test_relay_login_failure_is_retried_not_bounced(tmp_path, stoppers, ca):
    sink = Sink(users={"me": "s3cret"}, starttls_context=server_context(ca))
    stoppers.append(sink)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    q = make_queue(tmp_path, f"""
        [relay]
        host = "127.0.0.1"
        port = {sink.port}
        user = "me"
        password = "wrong"
        ca_file = "{ca_file}"
        """)
    q.enqueue("bob@src.test", "carol@dest.test", RAW)
    assert q.run_once()["deferred"] == 1
    item, = q.items()
    assert item.attempts == 1 and "refused the login of 'me'" in item.last_error
    assert sink.messages == []


def test_relay_without_starttls_is_not_used_in_clear(tmp_path, stoppers):
    sink = Sink()  # no TLS at all
    stoppers.append(sink)
    q = make_queue(tmp_path, f'[relay]\nhost = "127.0.0.1"\nport = {sink.port}\nuser = "me"\npassword = "p"\n')
    q.enqueue("bob@src.test", "carol@dest.test", RAW)
    assert q.run_once()["deferred"] == 1
    assert "does not offer STARTTLS" in q.items()[0].last_error
    assert sink.messages == []


# -- MX delivery ----------------------------------------------------------------------------------

@pytest.fixture
def mx_world(stoppers):
    """mx1 (127.0.0.2) answers RCPT with what `mx1_answer` holds; mx2 (127.0.0.3) accepts everything."""
    port = port_free_on(["127.0.0.2", "127.0.0.3"])
    mx1_answer = {"value": "451 4.3.0 try again later"}
    mx1 = Sink("127.0.0.2", port, rcpt_policy=lambda a: mx1_answer["value"])
    mx2 = Sink("127.0.0.3", port)
    dns = DNSResponder({
        ("dest.test", "MX"): ["20 mx2.dest.test.", "10 mx1.dest.test."],
        ("mx1.dest.test", "A"): ["127.0.0.2"],
        ("mx2.dest.test", "A"): ["127.0.0.3"],
        ("src.test", "MX"): ["10 mx2.dest.test."],
        ("bare.test", "A"): ["127.0.0.3"],          # no MX: the A record is the implicit MX
        ("nomail.test", "MX"): ["0 ."],              # RFC 7505 null MX
    })
    stoppers.extend([mx1, mx2, dns])
    return {"port": port, "mx1": mx1, "mx2": mx2, "dns": dns, "mx1_answer": mx1_answer}


def mx_queue(tmp_path, w, extra=""):
    return make_queue(tmp_path, f'[queue]\nnameservers = ["{w["dns"].address}"]\nmx_port = {w["port"]}\n'
                                f'hostname = "fd.test"\n{extra}')


def test_mx_preference_first_refuses_second_accepts(tmp_path, mx_world):
    q = mx_queue(tmp_path, mx_world)
    q.enqueue("bob@src.test", "carol@dest.test", RAW)
    q.enqueue("bob@src.test", "dave@bare.test", RAW)
    assert q.run_once()["sent"] == 2
    assert mx_world["mx1"].handler.rcpt_attempts == ["carol@dest.test"]  # tried first (preference 10)
    assert mx_world["mx1"].messages == []
    got = {m.rcpt_tos[0]: m for m in mx_world["mx2"].messages}
    assert set(got) == {"carol@dest.test", "dave@bare.test"}
    assert got["carol@dest.test"].data == crlf(RAW) and got["carol@dest.test"].mail_from == "bob@src.test"
    assert ("dest.test.", "MX") in mx_world["dns"].queries and ("bare.test.", "A") in mx_world["dns"].queries


def test_mx_5xx_and_undeliverable_domains_bounce_at_once(tmp_path, mx_world):
    mx_world["mx1_answer"]["value"] = "550 5.1.1 no such user here"
    q = mx_queue(tmp_path, mx_world)
    q.enqueue("bob@src.test", "carol@dest.test", RAW)
    q.enqueue("bob@src.test", "x@nomail.test", RAW)
    q.enqueue("bob@src.test", "y@missing.test", RAW)       # NXDOMAIN
    q.enqueue("", "z@nomail.test", RAW, kind="vacation")   # null sender: dropped, never bounced
    assert q.run_once() == {"sent": 0, "deferred": 0, "bounced": 4, "dropped": 0}
    # the 5xx from the best MX is final: mx2 never saw carol's message
    assert mx_world["mx2"].messages == []
    kinds = sorted(i.kind for i in q.items())
    assert kinds == ["dsn", "dsn", "dsn"]
    assert q.run_once()["sent"] == 3   # the bounces go to bob's MX (mx2)
    dsns = mx_world["mx2"].messages
    assert len(dsns) == 3 and all(d.mail_from == "<>" and d.rcpt_tos == ["bob@src.test"] for d in dsns)
    reports = {}
    for d in dsns:
        msg = email.message_from_bytes(d.data)
        assert msg.get_content_type() == "multipart/report"
        assert msg.get_param("report-type") == "delivery-status"
        status = msg.get_payload()[1]
        fields = dict(status.get_payload()[1].items())
        reports[fields["Final-Recipient"]] = fields
        assert msg.get_payload()[2].get_content_type() == "text/rfc822-headers"
        assert b"Message-ID: <m1@src.test>" in d.data
    assert set(reports) == {"rfc822; carol@dest.test", "rfc822; x@nomail.test", "rfc822; y@missing.test"}
    assert all(f["Action"] == "failed" for f in reports.values())
    assert reports["rfc822; carol@dest.test"]["Status"] == "5.1.1"
    assert "550 5.1.1 no such user here" in reports["rfc822; carol@dest.test"]["Diagnostic-Code"]
    assert q.items() == []


# -- timing -------------------------------------------------------------------------------------

def test_retry_schedule_delay_notice_and_bounce(tmp_path, stoppers):
    freezegun = pytest.importorskip("freezegun")
    sink = Sink(rcpt_policy=lambda a: "451 4.2.1 mailbox busy" if a == "slow@dest.test" else None)
    stoppers.append(sink)
    q = make_queue(tmp_path, f"""
        [relay]
        host = "127.0.0.1"
        port = {sink.port}
        tls = "none"
        [queue]
        retry = ["10m", "1h"]
        delay_notice = "4h"
        bounce_after = "5d"
        """)
    # asyncio (the sink's loop) and sockets keep the real clock; the queue sees the frozen one.
    ignore = ["asyncio", "aiosmtpd", "selectors", "socket", "smtplib", "ssl", "concurrent"]
    with freezegun.freeze_time("2030-01-01 00:00:00", ignore=ignore) as clock:
        q.enqueue("bob@src.test", "slow@dest.test", RAW)
        assert q.run_once()["deferred"] == 1                        # try 1 at 0:00
        clock.tick(9 * 60)
        assert q.run_once() == {"sent": 0, "deferred": 0, "bounced": 0, "dropped": 0}  # 0:09: not due
        clock.tick(60)
        assert q.run_once()["deferred"] == 1                        # 0:10: try 2, then hourly
        for _ in range(3):
            clock.tick(3600)
            assert q.run_once()["deferred"] == 1                    # 1:10, 2:10, 3:10
        assert [m.rcpt_tos for m in sink.messages] == []            # no notice before 4 h
        clock.tick(3600)
        counts = q.run_once()                                       # 4:10: late -> one delay notice
        assert counts["deferred"] == 1
        assert q.run_once()["sent"] == 1
        notice, = sink.messages
        assert notice.mail_from == "<>" and notice.rcpt_tos == ["bob@src.test"]
        assert b"Action: delayed" in notice.data and b"Will-Retry-Until:" in notice.data
        for _ in range(5):
            clock.tick(3600)
            q.run_once()
        assert len(sink.messages) == 1                              # the notice is sent only once
        item, = q.items()
        assert item.attempts == 11 and "451 4.2.1 mailbox busy" in item.last_error
        clock.move_to("2030-01-06 00:00:01")                        # 5 days: give up
        assert q.run_once()["bounced"] == 1
        assert q.run_once()["sent"] == 1
        bounce = sink.messages[1]
        assert bounce.mail_from == "<>" and b"Action: failed" in bounce.data and b"Status: 4.2.1" in bounce.data
        assert q.items() == []


def test_crash_after_queueing_loses_nothing_and_sends_once(tmp_path, stoppers):
    sink = Sink()
    stoppers.append(sink)
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[relay]\nhost = "127.0.0.1"\nport = {sink.port}\ntls = "none"\n'
                   f'[delivery]\nstate_dir = "{tmp_path}/state"\n')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    crash = textwrap.dedent(f"""
        import os, signal, sys
        from fetchdeliver.config import Settings, parse_file
        from fetchdeliver.outbound.queue import OutboundQueue
        q = OutboundQueue.from_settings(Settings(parse_file({str(cfg)!r})))
        qid = q.enqueue("bob@src.test", "carol@dest.test", sys.stdin.buffer.read())
        print(qid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)   # dies before any send, no cleanup
        """)
    r = subprocess.run([sys.executable, "-c", crash], input=RAW, capture_output=True, env=env, timeout=60)
    assert r.returncode == -signal.SIGKILL, r.stderr
    qid = r.stdout.decode().strip()
    cmd = [sys.executable, "-m", "fetchdeliver", "queue", "-c", str(cfg)]
    listed = subprocess.run([*cmd, "list"], capture_output=True, text=True, env=env, timeout=60)
    assert listed.returncode == 0 and qid in listed.stdout and "carol@dest.test" in listed.stdout
    for _ in range(2):  # the second flush finds nothing: sent exactly once
        r = subprocess.run([*cmd, "flush"], capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
    got, = sink.messages
    assert got.data == crlf(RAW)
    listed = subprocess.run([*cmd, "list"], capture_output=True, text=True, env=env, timeout=60)
    assert "the queue is empty" in listed.stdout


def test_queue_remove_command(tmp_path):
    q = make_queue(tmp_path, "")
    qid = q.enqueue("bob@src.test", "carol@dest.test", RAW)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "fetchdeliver", "queue", "-c", str(tmp_path / "config.toml")]
    r = subprocess.run([*cmd, "remove", "NOSUCHID"], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode != 0 and "NOSUCHID" in r.stderr
    r = subprocess.run([*cmd, "remove", qid], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert q.items() == [] and os.listdir(q.msg_dir) == []


# -- vacation and notify rules -----------------------------------------------------------------------

def msg(raw: bytes, sender="bob@src.test", rcpt="alice@example.com") -> Message:
    return Message(raw, sender=sender, recipients=[rcpt], original_recipient=rcpt, origin="test")


@pytest.mark.parametrize("sender,extra", [
    ("", b""),
    ("MAILER-DAEMON@src.test", b""),
    ("owner-list@src.test", b""),
    ("list-request@src.test", b""),
    ("bob@src.test", b"Auto-Submitted: auto-replied\n"),
    ("bob@src.test", b"Precedence: bulk\n"),
    ("bob@src.test", b"List-Id: <l.src.test>\n"),
])
def test_vacation_is_never_sent_to_robots_or_lists(tmp_path, sender, extra):
    q = make_queue(tmp_path, "")
    assert q.submit_action(Vacation("away"), msg(extra + RAW, sender=sender)) is None
    assert q.items() == []


def test_vacation_reply_once_per_period_and_only_when_addressed(tmp_path):
    freezegun = pytest.importorskip("freezegun")
    q = make_queue(tmp_path, '[queue]\nhostname = "fd.test"\n')
    act = Vacation("I am away.", seconds=3600)
    with freezegun.freeze_time("2030-01-01 00:00:00") as clock:
        r = q.submit_action(act, msg(RAW))
        assert r is not None and r.target == "queue"
        assert q.submit_action(act, msg(RAW)) is None              # same sender within the period
        not_to_me = RAW.replace(b"To: alice@example.com", b"To: somelist@src.test")
        assert q.submit_action(act, msg(not_to_me, sender="eve@src.test")) is None
        clock.tick(3601)
        assert q.submit_action(act, msg(RAW)) is not None          # a new period
    items = q.items()
    assert [(i.kind, i.sender, i.recipient) for i in items] == [("vacation", "", "bob@src.test")] * 2
    reply = email.message_from_bytes(q.message(items[0].id))
    # To: the original's From mailbox with its display name (as Pigeonhole's vacation)
    assert reply["To"] == "Bob <bob@src.test>" and reply["From"] == "alice@example.com"
    assert reply["Subject"] == "Auto: hi" and reply["In-Reply-To"] == "<m1@src.test>"
    assert reply["Auto-Submitted"].startswith("auto-replied")
    assert reply.get_payload() == "I am away.\n"


def test_notify_mailto(tmp_path):
    q = make_queue(tmp_path, "")
    n = Notify("mailto:pager@dest.test?subject=New%20mail&from=evil@x.test", importance="1")
    assert q.submit_action(n, msg(RAW)) is not None
    item, = q.items()
    assert (item.kind, item.sender, item.recipient) == ("notify", "", "pager@dest.test")
    note = email.message_from_bytes(q.message(item.id))
    assert note["Subject"] == "New mail" and note["From"] == "alice@example.com"  # from= in the URI ignored
    assert note["Auto-Submitted"] == "auto-notified"
    assert q.submit_action(n, msg(b"Auto-Submitted: auto-generated\n" + RAW)) is None


# -- through the LMTP server and the Sieve engine ----------------------------------------------------

def sieve_ready():
    from fetchdeliver import sieve

    if not (hasattr(sieve, "compile_file") and hasattr(sieve, "run")):
        pytest.skip("the Sieve interpreter is not there yet")


def test_lmtp_redirect_and_vacation_end_to_end(tmp_path, stoppers):
    import smtplib

    sieve_ready()
    sink = Sink()
    stoppers.append(sink)
    (tmp_path / "fwd.sieve").write_text('redirect "carol@dest.test";\n')
    (tmp_path / "away.sieve").write_text('require "vacation";\nvacation :days 1 "Back on Monday.";\n')
    a, b = tmp_path / "a", tmp_path / "b"
    cfg = tmp_path / "config.toml"
    cfg.write_text(textwrap.dedent(f"""
        [relay]
        host = "127.0.0.1"
        port = {sink.port}
        tls = "none"
        [[recipient]]
        address = "fwd@example.com"
        maildir = "{a}"
        rules = "{tmp_path}/fwd.sieve"
        [[recipient]]
        address = "alice@example.com"
        maildir = "{b}"
        rules = "{tmp_path}/away.sieve"
        [delivery]
        state_dir = "{tmp_path}/state"
        """))
    queue = OutboundQueue.from_settings(Settings(parse_file(str(cfg)), str(cfg)))
    server = Server(str(cfg), outbound=queue)
    stoppers.append(server)
    looped = b"Delivered-To: carol@dest.test\n" + RAW
    with smtplib.LMTP(server.host, server.port) as c:
        for raw in (RAW, RAW, looped):
            for rcpt in ("fwd@example.com", "alice@example.com"):  # smtplib reads one reply per DATA
                assert c.sendmail("bob@src.test", [rcpt], to_wire(raw)) == {}
    # two redirects and one vacation reply were queued; the looping message stayed in the INBOX
    assert sorted(i.kind for i in queue.items()) == ["redirect", "redirect", "vacation"]
    kept, = maildir_messages(a)
    assert kept.endswith(looped.split(b"\n", 1)[1]) and b"Delivered-To: carol@dest.test" in kept
    assert len(maildir_messages(b)) == 3
    assert queue.run_once()["sent"] == 3
    by_rcpt = {}
    for m in sink.messages:
        by_rcpt.setdefault(m.rcpt_tos[0], []).append(m)
    fwd = by_rcpt["carol@dest.test"]
    assert len(fwd) == 2 and all(m.mail_from == "bob@src.test" for m in fwd)
    assert fwd[0].data.startswith(b"X-Loop: fwd@example.com\r\nDelivered-To: fwd@example.com\r\n")
    assert fwd[0].data.endswith(crlf(RAW))
    vac, = by_rcpt["bob@src.test"]
    assert vac.mail_from == "<>" and b"Back on Monday." in vac.data


def test_lazy_outbound_queues_on_first_use(tmp_path):
    from fetchdeliver.actions import Redirect
    from fetchdeliver.outbound.lazy import LazyOutbound

    path = tmp_path / "config.toml"
    path.write_text(f'[delivery]\nstate_dir = "{tmp_path}/state"\n')
    lazy = LazyOutbound(Settings(parse_file(str(path)), str(path)))
    receipt = lazy.submit_action(Redirect("carol@dest.test"), msg(RAW))
    assert receipt.target == "queue" and os.path.exists(receipt.path)
    receipt.rollback()  # the engine's undo when the whole message must be retried
    assert not os.path.exists(receipt.path)
    assert OutboundQueue.from_settings(lazy.settings).items() == []
