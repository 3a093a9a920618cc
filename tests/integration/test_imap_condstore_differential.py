"""CONDSTORE/QRESYNC, ESEARCH and SEARCHRES: one session against the real Dovecot and against our server, same Maildir.

MODSEQ values are each server's own, so they are compared by what they mean: every MODSEQ
value is replaced by "N" and every command's MODSEQ argument is taken from that server's own
earlier answers. What must agree: which messages each answer lists, their flags, VANISHED
sets, [MODIFIED ...] sets, and the status of every command.
"""

from __future__ import annotations

import re

import pytest

from test_imap_differential import Conn, _build, norm, run_on_both

pytestmark = pytest.mark.timeout(120)


def _modseq_blind(r: bytes) -> bytes:
    r = re.sub(rb"MODSEQ \(\d+\)", b"MODSEQ (N)", r)
    r = re.sub(rb"\(MODSEQ \d+\)", b"(MODSEQ N)", r)
    if r.startswith(b"* ESEARCH"):
        r = re.sub(rb" MODSEQ \d+$", b" MODSEQ N", r)
    return re.sub(rb"HIGHESTMODSEQ \d+", b"HIGHESTMODSEQ N", r)


def _session(port: int) -> list:
    c = Conn(port)
    assert c.run(b"LOGIN alice secret")[1].startswith(b"OK")
    out = []
    state: dict = {}

    def run(cmd: bytes) -> list[bytes]:
        untagged, tagged = c.run(_fill(cmd, state))
        code = re.search(rb"\[(MODIFIED [^\]]*)\]", tagged)
        blind = [_modseq_blind(u) for u in untagged]
        extra = sorted(u for u in blind if u.startswith((b"* VANISHED", b"* ENABLED", b"* ESEARCH")) or
                       (u.startswith(b"* SEARCH") and u.endswith(b"(MODSEQ N)")))
        blind = [u[:-len(b" (MODSEQ N)")] if u.startswith(b"* SEARCH") and u.endswith(b"(MODSEQ N)") else u
                 for u in blind]
        out.append((cmd, norm(cmd, blind, tagged), code.group(1) if code else None, extra,
                    untagged, tagged))
        return untagged + [tagged]

    got = run(b"SELECT INBOX (CONDSTORE)")
    state["uv"] = int(re.search(rb"UIDVALIDITY (\d+)", b"\n".join(got)).group(1))
    state["hms"] = int(re.search(rb"HIGHESTMODSEQ (\d+)", b"\n".join(got)).group(1))
    run(b"FETCH 1:* (UID FLAGS MODSEQ)")
    run(b"STORE 1 +FLAGS (\\Flagged)")
    run(b"FETCH 1:* (FLAGS) (CHANGEDSINCE {hms})")
    got = run(b"FETCH 2 MODSEQ")
    state["m2"] = int(re.search(rb"MODSEQ \((\d+)\)", got[0]).group(1))
    run(b"STORE 2 +FLAGS.SILENT ($Work)")
    run(b"STORE 2:3 (UNCHANGEDSINCE {m2}) +FLAGS (\\Answered)")
    run(b"UID STORE 1:3 (UNCHANGEDSINCE 0) +FLAGS.SILENT (\\Answered)")
    run(b"SEARCH MODSEQ {hms1}")
    run(b"UID SEARCH MODSEQ \"/flags/\\\\answered\" all {hms1} UNSEEN")
    run(b"STATUS Work (MESSAGES HIGHESTMODSEQ)")
    # ESEARCH (RFC 4731) and SEARCHRES (RFC 5182), compared as they are (the tags are the same).
    run(b"SEARCH RETURN (MIN MAX COUNT ALL) FLAGGED")
    run(b"UID SEARCH RETURN () ALL")
    run(b"SEARCH RETURN (COUNT) DELETED")
    run(b"SEARCH RETURN (MIN) DELETED")
    run(b"SEARCH RETURN (COUNT) MODSEQ {hms1}")
    run(b"SEARCH RETURN (SAVE) FLAGGED")
    run(b"FETCH $ (UID FLAGS)")
    run(b"UID SEARCH RETURN (SAVE MIN) UNFLAGGED")
    run(b"UID SEARCH $")
    run(b"SEARCH OR $ 2")
    run(b"ENABLE QRESYNC")
    run(b"STORE 4 +FLAGS.SILENT (\\Deleted)")
    run(b"EXPUNGE")
    run(b"UID FETCH 1:* FLAGS (CHANGEDSINCE {hms} VANISHED)")
    run(b"UID FETCH 1:* FLAGS (CHANGEDSINCE {hms})")
    run(b"SELECT INBOX (QRESYNC ({uv} {hms}))")
    run(b"EXAMINE INBOX (QRESYNC ({uv} {hms} 1:3))")
    run(b"EXAMINE INBOX (QRESYNC ({uv1} {hms}))")
    c.run(b"LOGOUT")
    return out


def _fill(cmd: bytes, state: dict) -> bytes:
    extra = {"hms1": state.get("hms", 0) + 1, "uv1": state.get("uv", 0) + 1}

    def sub(m):
        k = m.group(1).decode()
        return str(extra[k] if k in extra else state[k]).encode()

    return re.sub(rb"\{(\w+)\}", sub, cmd)


def test_condstore_qresync_session_like_dovecot(tmp_path):
    theirs, mine = run_on_both(tmp_path, _build, _session)
    diffs = []
    for (cmd, want, w_code, w_extra, d_untagged, d_tagged), (_c, got, g_code, g_extra, o_untagged, o_tagged) \
            in zip(theirs, mine):
        if (want, w_code, w_extra) != (got, g_code, g_extra):
            diffs.append(f"== {cmd.decode()}\n-- dovecot: {d_tagged!r}\n" + "\n".join(
                repr(x) for x in d_untagged) + f"\n-- fetchdeliver: {o_tagged!r}\n" + "\n".join(
                repr(x) for x in o_untagged))
    assert not diffs, f"{len(diffs)} of {len(theirs)} commands differ:\n" + "\n\n".join(diffs)
