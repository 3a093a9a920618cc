"""A STORE that adds a keyword new to the mailbox announces it in FLAGS and PERMANENTFLAGS first."""

from __future__ import annotations

from imap_helpers import RawClient, make_server


def test_new_keyword_is_announced_once(tmp_path):
    server, _maildir, _ = make_server(tmp_path, n_plain=2)
    try:
        r = RawClient(server.port())
        assert r.command("a1", b"LOGIN alice secret")[-1].startswith(b"a1 OK")
        sel = r.command("a2", b"SELECT INBOX")
        assert not any(b"$Project" in ln for ln in sel)
        out = r.command("a3", b"STORE 1 +FLAGS ($Project)")
        flags = [ln for ln in out if ln.startswith(b"* FLAGS")]
        perm = [ln for ln in out if b"[PERMANENTFLAGS" in ln]
        assert len(flags) == 1 and b"$Project" in flags[0] and b"$Project" in perm[0]
        assert out.index(flags[0]) < next(i for i, ln in enumerate(out) if b"FETCH" in ln)
        again = r.command("a4", b"STORE 2 +FLAGS ($Project)")      # known now: no second FLAGS
        assert not any(ln.startswith(b"* FLAGS") for ln in again)
        assert again[-1].startswith(b"a4 OK")
        r.close()
    finally:
        server.stop()
