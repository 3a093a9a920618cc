"""`fetchdeliver fetch` against a real Dovecot over POP3: keep / delete, every TLS mode, APOP."""

import pytest

from conftest import make_message
from fetchsetup import FetchSetup, counts, originals, split_received, lf


def pop3_messages(tag):
    # POP3 cannot carry a message without a final line ending: every message here has one.
    return [
        make_message(1, tag),
        make_message(2, tag, extra="X-Grüße: 8-bit header\r\n".encode("utf-8")),
        make_message(3, tag) + b".leading dot\r\n..two dots\r\n.\r\nFrom the start\r\n",   # dot-stuffing
        make_message(4, tag) + b"z" * 300_000 + b"\r\n",                                    # one long line
        make_message(5, tag) + "8-bit body: naïve café\r\n".encode("latin-1"),
    ]


@pytest.mark.parametrize("tls", ["implicit", "starttls", "none"])
@pytest.mark.parametrize("after", ["keep", "delete"])
def test_pop3_policy_and_tls(tmp_path, dovecot, fetchdeliver_cmd, tls, after):
    setup = FetchSetup(tmp_path, dovecot, fetchdeliver_cmd)
    msgs = pop3_messages(f"{tls}-{after}")
    dovecot.append_many("alice", msgs)
    setup.account("pop", "pop3", tls, after=after)

    r = setup.run()
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert counts(r.stdout, "pop") == (len(msgs), len(msgs), 0, 0)
    got = setup.delivered()
    assert sorted(originals(got)) == sorted(lf(msgs))
    assert all(b"with POP3" in split_received(raw)[0] for raw in got)

    left = sorted(raw for _, raw in dovecot.contents("alice").values())
    assert left == (sorted(msgs) if after == "keep" else [])

    r2 = setup.run()
    assert r2.returncode == 0, r2.stderr
    assert counts(r2.stdout, "pop") == (0, 0, 0, 0)

    new = make_message(7, f"{tls}-{after}-late")
    dovecot.append("alice", new)
    r3 = setup.run()
    assert counts(r3.stdout, "pop") == (1, 1, 0, 0), r3.stderr
    assert sorted(originals(setup.delivered())) == sorted(lf(msgs + [new]))


def test_pop3_apop_login(tmp_path, dovecot_apop, fetchdeliver_cmd):
    setup = FetchSetup(tmp_path, dovecot_apop, fetchdeliver_cmd)
    msgs = [make_message(i, "apop") for i in range(3)]
    dovecot_apop.append_many("alice", msgs)
    setup.account("pop", "pop3", "none", apop=True)
    r = setup.run()
    assert r.returncode == 0, r.stderr
    assert counts(r.stdout, "pop") == (3, 3, 0, 0)
    assert "method=APOP" in dovecot_apop.read_log()
    assert sorted(originals(setup.delivered())) == sorted(lf(msgs))


def test_pop3_apop_wrong_password_is_refused(tmp_path, dovecot_apop, fetchdeliver_cmd):
    setup = FetchSetup(tmp_path, dovecot_apop, fetchdeliver_cmd)
    dovecot_apop.append("alice", make_message(1, "apop"))
    setup.account("pop", "pop3", "none", apop=True, password="wrong")
    r = setup.run()
    assert r.returncode != 0
    assert r.stderr.startswith("fetchdeliver: pop: APOP: server said: -ERR")
    assert setup.delivered() == []


def test_pop3_delete_after_an_interrupted_session_finishes_the_deletes(tmp_path, dovecot, fetchdeliver_cmd):
    """Messages recorded in the state but still on the server (DELE lost with the session) are
    deleted by the next run, not delivered again."""
    from fetchdeliver.config import Settings, load
    from fetchdeliver.state import State

    setup = FetchSetup(tmp_path, dovecot, fetchdeliver_cmd)
    msgs = [make_message(i, "redo") for i in range(3)]
    dovecot.append_many("alice", msgs)
    setup.account("pop", "pop3", "implicit", after="keep")
    r = setup.run()
    assert counts(r.stdout, "pop") == (3, 3, 0, 0), r.stderr
    # Same state, now with after = delete: what is recorded is deleted without a second delivery.
    setup.accounts[0]["after"] = "delete"
    setup.write()
    r = setup.run()
    assert r.returncode == 0, r.stderr
    assert counts(r.stdout, "pop") == (0, 0, 0, 0)
    assert dovecot.contents("alice") == {}
    assert len(setup.delivered()) == 3
    state_dir = Settings(load(setup.config)).state_dir
    with State(state_dir) as st:
        assert len(st.pop3_seen("pop")) == 3
    r = setup.run()
    assert counts(r.stdout, "pop") == (0, 0, 0, 0), r.stderr
    with State(state_dir) as st:
        assert st.pop3_seen("pop") == set()   # gone from the server: forgotten
