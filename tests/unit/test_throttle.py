"""Which server replies mean "back off", and the per-server back-off arithmetic."""

from __future__ import annotations

from fetchdeliver.sources.throttle import ServerBackoff, Throttle, classify


def test_replies_that_mean_back_off():
    t = classify("EXAMINE INBOX: server said: NO Request is throttled. Suggested Backoff Time: 299910 milliseconds "
                 "(outlook.office365.com:993)")
    assert t == Throttle("SUGGESTED", "Suggested Backoff Time: 299910 milliseconds", 299.91)
    t = classify("LOGIN: server said: [UNAVAILABLE] Temporary authentication failure. [vm:2026-12-02 12:46:39] "
                 "(alice at 127.0.0.1:993)")
    assert t.kind == "UNAVAILABLE" and t.reason.startswith("[UNAVAILABLE] Temporary authentication failure")
    assert classify("SELECT X: server said: NO [LIMIT] Too many open mailboxes (h:1)").kind == "LIMIT"
    assert classify("UID FETCH BODY.PEEK[]: server said: NO [THROTTLED] slow down (h:1)").kind == "THROTTLED"
    assert classify("LOGIN: server said: [ALERT] Too many simultaneous connections. (Failure) (a at h:1)").kind \
        == "CONNECTIONS"
    assert classify("UID FETCH: connection lost: command: UID => System Error (h:993)").reason == "BYE System Error"
    assert classify("IDLE: the server ended the session (BYE Connection closed. 14)").reason == \
        "BYE Connection closed. 14"


def test_ordinary_errors_are_not_throttling():
    for text in ("LOGIN: server said: [AUTHENTICATIONFAILED] Authentication failed. (alice at h:143)",
                 "SELECT INBOX: connection lost: command: SELECT => socket error: EOF (h:993)",
                 "connect: Connection refused (127.0.0.1:5)", "", "EXAMINE Nope: server said: NO Mailbox doesn't exist"):
        assert classify(text) is None, text


def test_backoff_doubles_honours_suggested_time_caps_and_resets():
    now = [1000.0]
    changes = []
    b = ServerBackoff(cap=600, on_change=lambda s, st: changes.append((s, st)), clock=lambda: now[0])
    unavailable = Throttle("UNAVAILABLE", "[UNAVAILABLE] down", None)
    assert b.hit("h:993", unavailable) == 30
    now[0] += 30
    assert b.left("h:993") == 0
    assert b.hit("h:993", unavailable) == 60          # doubled: a second reply in a row
    assert b.state("h:993").hits == 2 and b.left("other:993") == 0
    assert b.hit("h:993", Throttle("SUGGESTED", "Suggested Backoff Time: 5000 milliseconds", 5.0)) == 60  # never shortened
    now[0] += 100
    assert b.hit("h:993", Throttle("SUGGESTED", "x", 7.5)) == 7.5   # the server's own figure, exactly
    for _ in range(10):
        b.hit("h:993", unavailable)
    assert b.left("h:993") <= 600                    # capped by backoff_max
    b.clear("h:993")
    assert b.left("h:993") == 0 and b.state("h:993") is None and changes[-1] == ("h:993", None)
    assert b.hit("h:993", unavailable) == 30         # reset: starts over
