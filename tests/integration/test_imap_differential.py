"""Differential test: one Maildir copied twice, served by Dovecot and by us, the same session against both.

The answers are parsed and compared wherever RFC 3501 leaves the server no
choice. Normalised away: greeting and response texts, capability lists,
UIDVALIDITY values, \\Recent (which messages count as recent before any session
saw them is the server's call), the order of flags and of FETCH items, quoted
string versus literal, the time zone of INTERNALDATE, special-use and child
attributes the client did not ask for, NIL or "" for a section that does not
exist, and which messages a STORE reports besides the changed ones.

Two MIME corner cases are kept out of the messages, as the servers split them
differently: a folded header whose continuation starts with more than one
blank (RFC 5322 unfolding keeps both, Dovecot collapses them), and a nested
multipart whose close delimiter is directly followed by the parent's boundary
(RFC 2046 gives the CRLF between them to the parent's delimiter, Dovecot to
the nested part).
"""

from __future__ import annotations

import os
import shutil
import socket
from datetime import datetime

import pytest

from dovecot import Dovecot, DovecotUnavailable
from fetchdeliver.delivery.maildir import MaildirStore
from fetchdeliver.imapserver.auth import PasswdFileAuthenticator, set_password
from fetchdeliver.imapserver.server import ServerConfig, ThreadedServer
from imap_helpers import MULTIPART, plain

pytestmark = pytest.mark.timeout(120)

# Dovecot's Maildir++ hierarchy separator is "." unless told otherwise; ours is "/".
NAMESPACE = "namespace inbox {\n  inbox = yes\n  separator = /\n  prefix =\n}\n"

ALTERNATIVE = (
    b"From: Bob <bob@example.com>, \"Carol Q. Public\" <carol@example.com>\n"
    b"Sender: list-bounces@example.com\n"
    b"Reply-To: replies@example.com\n"
    b"To: alice@example.com\n"
    b"Subject: nested\n parts and a folded subject\n"
    b"Date: Wed, 03 Dec 2025 18:05:00 -0500\n"
    b"Message-ID: <alt.1@example.com>\n"
    b"In-Reply-To: <multi.1@example.org>\n"
    b"MIME-Version: 1.0\n"
    b"Content-Type: multipart/mixed; boundary=outer\n"
    b"\n"
    b"--outer\n"
    b"Content-Type: multipart/alternative; boundary=\"inner\"\n"
    b"\n"
    b"--inner\n"
    b"Content-Type: text/plain; charset=us-ascii; format=flowed\n"
    b"\n"
    b"plain alternative with the word quokka\n"
    b"--inner\n"
    b"Content-Type: text/html; charset=utf-8\n"
    b"Content-Transfer-Encoding: 8bit\n"
    b"\n"
    b"<p>html alternative</p>\n"
    b"--inner--\n"
    b"inner epilogue\n"
    b"--outer\n"
    b"Content-Type: image/png; name=dot.png\n"
    b"Content-ID: <dot@example.com>\n"
    b"Content-Description: a dot\n"
    b"Content-Disposition: inline; filename=dot.png\n"
    b"Content-Transfer-Encoding: base64\n"
    b"\n"
    b"iVBORw0KGgo=\n"
    b"--outer\n"
    b"Content-Type: message/rfc822\n"
    b"\n"
    b"From: inner2@example.org\n"
    b"Subject: forwarded\n"
    b"MIME-Version: 1.0\n"
    b"Content-Type: multipart/mixed; boundary=fwd\n"
    b"\n"
    b"--fwd\n"
    b"Content-Type: text/plain\n"
    b"\n"
    b"forwarded text\n"
    b"--fwd--\n"
    b"\n"
    b"--outer--\n")

BARE = (b"From: \"odd name\"@example.com\n"
        b"To: undisclosed-recipients:;\n"
        b"Subject:\n"
        b"Date: 1 Jan 2025 00:00:00 GMT\n"
        b"\n"
        b"Gr\xc3\xb6\xc3\x9fe, an 8-bit body without MIME headers\n"
        b"second line\n")

EMPTY_BODY = b"From: x@example.org\nSubject: no body\nDate: Sun, 30 Nov 2025 23:59:59 +0000\n\n"

INBOX = [  # (raw, flags)
    (plain(1), ()), (plain(2), ("\\Seen",)), (plain(3), ("\\Seen", "\\Flagged", "$Label1")),
    (MULTIPART, ("\\Answered", "Project")), (ALTERNATIVE, ()), (BARE, ("\\Draft", "\\Seen")),
    (EMPTY_BODY, ("\\Deleted",)), (plain(4), ("$Label1",)),
]


def _build(root: str) -> None:
    """The Maildir both servers start from (no dovecot-uidlist: each numbers the messages itself)."""
    store = MaildirStore(root, fsync=False)
    for i, (raw, flags) in enumerate(INBOX):
        store.deliver(raw, flags=flags)
        if i == 4:
            # Dovecot-style names in one second whose microsecond fields differ in length: UIDs
            # go by the number (M9 before M10), not by the string.
            for usec, n in ((10, 6), (9, 5)):
                with open(os.path.join(root, "new", f"1764000000.M{usec}P77.host"), "wb") as f:
                    f.write(plain(n))
                os.utime(os.path.join(root, "new", f"1764000000.M{usec}P77.host"), (1764000000, 1764000000))
    store.create_mailbox("Work")
    store.create_mailbox("Work/Sub")
    store.create_mailbox("Archive")
    for i in range(3):
        store.deliver(plain(i, "work"), "Work", flags=("\\Seen",) if i else ())
    store.deliver(plain(1, "sub"), "Work/Sub")


# -- a literal-aware raw client and a response parser ------------------------------------------------

class Conn:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.f = self.sock.makefile("rb")
        self.n = 0
        self.greeting = self.response()

    def response(self) -> bytes:
        """One response line, literals included."""
        out = b""
        while True:
            line = self.f.readline()
            if not line:
                raise EOFError(out)
            out += line
            if line.endswith(b"}\r\n") and b"{" in line:
                size = int(line[line.rindex(b"{") + 1:-3])
                out += self.f.read(size)
                continue
            return out[:-2]

    def run(self, text: bytes, tag_prefix: bytes = b"d") -> tuple[list[bytes], bytes]:
        """(untagged responses, tagged response) of one command; continuations answered for literals."""
        self.n += 1
        tag = tag_prefix + b"%d" % self.n
        self.sock.sendall(tag + b" " + text + b"\r\n")
        untagged = []
        while True:
            r = self.response()
            if r.startswith(tag + b" "):
                return untagged, r[len(tag) + 1:]
            if not r.startswith(b"+"):
                untagged.append(r)


def parse(b: bytes) -> list:
    """Tokens of a response: atoms as str, strings (quoted or literal) as bytes, NIL as None, lists."""
    out, stack, i = [], [], 0
    cur = out
    while i < len(b):
        c = b[i:i + 1]
        if c == b" ":
            i += 1
        elif c == b"(":
            stack.append(cur)
            cur.append([])
            cur = cur[-1]
            i += 1
        elif c == b")":
            cur = stack.pop()
            i += 1
        elif c == b'"':
            j, s = i + 1, bytearray()
            while b[j:j + 1] != b'"':
                if b[j:j + 1] == b"\\":
                    j += 1
                s += b[j:j + 1]
                j += 1
            cur.append(bytes(s))
            i = j + 1
        elif c == b"{":
            j = b.index(b"}", i)
            size = int(b[i + 1:j])
            cur.append(b[j + 3:j + 3 + size])
            i = j + 3 + size
        else:
            j, depth = i, 0
            while j < len(b) and (depth or b[j:j + 1] not in (b" ", b"(", b")")):
                if b[j:j + 1] == b"[":
                    depth += 1
                elif b[j:j + 1] == b"]":
                    depth -= 1
                j += 1
            atom = b[i:j].decode("utf-8", "replace")
            cur.append(None if atom.upper() == "NIL" else atom)
            i = j
    return out


def _flags(items) -> tuple:
    """A flag list in a canonical order, without \\Recent."""
    return tuple(sorted({f.lower() for f in items if f.lower() != "\\recent"}))


def _internaldate(s: bytes) -> float:
    return datetime.strptime(s.decode().strip(), "%d-%b-%Y %H:%M:%S %z").timestamp()


SPECIAL_USE = {"\\all", "\\archive", "\\drafts", "\\flagged", "\\junk", "\\sent", "\\trash"}


def norm_untagged(r: bytes):
    """A server-independent form of one untagged response."""
    t = parse(r[2:])
    head = t[0].upper() if isinstance(t[0], str) else t[0]
    if len(t) > 1 and isinstance(t[1], str) and t[1].upper() in ("FETCH", "EXPUNGE", "EXISTS", "RECENT"):
        kind = t[1].upper()
        if kind == "RECENT":
            return None
        if kind != "FETCH":
            return (kind, int(t[0]))
        items, d = t[2], {}
        for k, v in zip(items[::2], items[1::2]):
            k = k.upper()
            if k == "FLAGS":
                v = _flags(v)
            elif k == "INTERNALDATE":
                v = _internaldate(v)
            elif k.startswith("BODY[") and v is None:
                v = b""   # a section that does not exist: NIL or "" is the server's choice
            d[k] = v
        return ("FETCH", int(t[0]), repr(sorted(d.items())))
    if head in ("OK", "NO", "BAD"):
        code = t[1] if len(t) > 1 and isinstance(t[1], str) and t[1].startswith("[") else None
        if code is None:
            return None   # free text only
        name = code[1:].split(" ", 1)[0].rstrip("]").upper()
        if name in ("CAPABILITY", "HIGHESTMODSEQ", "NOMODSEQ", "URLMECH", "CLOSED",
                    "MAILBOXID"):   # RFC 8474: Dovecot 2.3 has no OBJECTID; the ids are the server's own
            return None
        if name == "UIDVALIDITY":
            return ("UIDVALIDITY",)
        if name == "PERMANENTFLAGS":
            inner = code[len("[PERMANENTFLAGS "):-1]
            return ("PERMANENTFLAGS", _flags(parse(inner.encode())[0]))
        return (code.upper(),)
    if head == "FLAGS":
        return ("FLAGS", _flags(t[1]))
    if head in ("LIST", "LSUB"):
        # Special-use attributes without RETURN (SPECIAL-USE) are optional (RFC 6154).
        attrs = tuple(sorted({a.lower() for a in t[1]} - SPECIAL_USE))
        return (head, attrs, t[2], t[3] if isinstance(t[3], bytes) else t[3].encode())
    if head == "STATUS":
        name = t[1] if isinstance(t[1], bytes) else t[1].encode()
        vals = dict(zip(t[2][::2], t[2][1::2]))
        vals.pop("UIDVALIDITY", None)
        vals.pop("RECENT", None)
        return ("STATUS", name, tuple(sorted(vals.items())))
    if head == "SEARCH":
        return ("SEARCH", tuple(sorted(int(x) for x in t[1:])))
    if head in ("CAPABILITY", "ENABLED", "ID", "BYE", "NAMESPACE"):
        return None
    return (r,)


def norm(cmd: bytes, untagged: list[bytes], tagged: bytes):
    status = parse(tagged)[0].upper()
    got = [n for n in (norm_untagged(r) for r in untagged) if n is not None]
    if not cmd.upper().startswith((b"SELECT", b"EXAMINE")):
        # A FLAGS/PERMANENTFLAGS update when a STORE defines a new keyword is optional.
        got = [n for n in got if n[0] not in ("FLAGS", "PERMANENTFLAGS")]
    if b" RETURN (" in cmd.upper() and b"CHILDREN" not in cmd.upper():
        # Child information without RETURN (CHILDREN) is optional (RFC 5258 section 4).
        got = [(n[0], tuple(a for a in n[1] if a not in ("\\haschildren", "\\hasnochildren")), *n[2:])
               if n[0] == "LIST" else n for n in got]
    code = None
    if status == "OK":
        t = parse(tagged)
        if len(t) > 1 and isinstance(t[1], str) and t[1].upper() in ("[READ-ONLY]", "[READ-WRITE]"):
            code = t[1].upper()
    return status, code, sorted(map(repr, got))


# -- the session -----------------------------------------------------------------------------------------

SEARCHES = [
    b"ALL", b"SEEN", b"UNSEEN", b"FLAGGED", b"UNFLAGGED", b"ANSWERED", b"DELETED", b"UNDELETED", b"DRAFT",
    b"KEYWORD $Label1", b"UNKEYWORD Project", b"KEYWORD Project",
    b"FROM sender1", b"FROM Carol", b"TO alice", b"CC Jurgen", b"CC juergen", b"SUBJECT number",
    b"SUBJECT \"folded subject\"", b"HEADER Message-ID multi.1", b"HEADER In-Reply-To \"\"",
    b"BODY quokka", b"BODY \"second line\"", b"TEXT zebra", b"TEXT inner2", b"TEXT \"a dot\"", b"BODY forwarded",
    b"LARGER 400", b"SMALLER 200", b"SENTBEFORE 1-Dec-2025", b"SENTSINCE 2-Dec-2025", b"SENTON 24-Nov-2025",
    b"SINCE 1-Jan-2000", b"BEFORE 1-Jan-2000", b"2:4", b"3:*", b"UID 2:5", b"NOT SEEN",
    b"OR FLAGGED DRAFT", b"OR (FROM bob) (SUBJECT \"no body\")", b"SEEN NOT KEYWORD $Label1 1:*",
    b"CHARSET UTF-8 SUBJECT number",
]

FETCHES = [
    b"1:* (UID FLAGS RFC822.SIZE INTERNALDATE)",
    b"1:* ENVELOPE",
    b"1:* BODYSTRUCTURE",
    b"1:* BODY",
    b"1:* (BODY.PEEK[HEADER] BODY.PEEK[TEXT])",
    b"1:* BODY.PEEK[]",
    b"1:* BODY.PEEK[1]",
    b"1:* BODY.PEEK[HEADER.FIELDS (From Subject DATE)]",
    b"1:* BODY.PEEK[HEADER.FIELDS.NOT (To Message-ID)]",
    b"1:* BODY.PEEK[]<10.20>",
    b"1:* (RFC822.HEADER RFC822.SIZE)",
    b"4:5 (BODY.PEEK[1.MIME] BODY.PEEK[2] BODY.PEEK[3.HEADER] BODY.PEEK[3.TEXT] BODY.PEEK[3.1] BODY.PEEK[3.1.MIME])",
    b"5 (BODY.PEEK[1.1] BODY.PEEK[1.2.MIME] BODY.PEEK[2.MIME] BODY.PEEK[3.1.1]<2.5> BODY.PEEK[4])",
    b"1:* FAST", b"1:* ALL", b"2 FULL",
    b"UID FETCH 1:* FLAGS",
]

SESSION = (
    [b"LIST \"\" \"*\"", b"LIST \"\" \"%\"", b"LIST \"\" \"Work/%\"", b"LIST \"\" \"\"", b"LSUB \"\" \"*\"",
     b"STATUS INBOX (MESSAGES UIDNEXT UNSEEN UIDVALIDITY)", b"STATUS Work (MESSAGES UIDNEXT UNSEEN)",
     b"STATUS Work/Sub (MESSAGES UNSEEN)", b"STATUS Archive (MESSAGES UIDNEXT UNSEEN)",
     b"EXAMINE Work", b"SEARCH ALL", b"FETCH 1:* (UID FLAGS)", b"CLOSE",
     b"SELECT INBOX"]
    + [b"SEARCH " + s for s in SEARCHES] + [b"UID SEARCH " + s for s in SEARCHES[:12]]
    + [b"FETCH " + f if not f.startswith(b"UID") else f for f in FETCHES]
    + [b"STORE 1 +FLAGS (\\Flagged)", b"STORE 2:3 -FLAGS (\\Seen)", b"STORE 4 FLAGS (\\Seen Project)",
       b"UID STORE 1:2 +FLAGS.SILENT (Later)", b"FETCH 1:4 FLAGS", b"FETCH 1 BODY[TEXT]", b"FETCH 1 FLAGS",
       b"COPY 1:2 Archive", b"STATUS Archive (MESSAGES UIDNEXT UNSEEN)",
       b"STORE 2 +FLAGS (\\Deleted)", b"EXPUNGE", b"SEARCH DELETED", b"FETCH 1:* (UID FLAGS)",
       b"SUBSCRIBE Work", b"LSUB \"\" \"*\"", b"LIST (SUBSCRIBED) \"\" \"*\"",
       b"LIST \"\" \"*\" RETURN (SUBSCRIBED)", b"LIST \"\" \"%\" RETURN (CHILDREN)", b"UNSUBSCRIBE Work",
       b"CREATE New/Folder", b"LIST \"\" \"*\"", b"RENAME New/Folder Renamed", b"LIST \"\" \"Ren*\"",
       b"DELETE Renamed", b"SELECT Archive", b"FETCH 1:* (UID FLAGS ENVELOPE)", b"UNSELECT",
       b"STATUS INBOX (MESSAGES UIDNEXT UNSEEN)", b"SELECT Nonexistent", b"FETCH 1 FLAGS"]
)


def _session(port: int) -> list[tuple[bytes, tuple]]:
    c = Conn(port)
    out = []
    untagged, tagged = c.run(b"LOGIN alice secret")
    assert tagged.startswith(b"OK"), tagged
    for cmd in SESSION:
        untagged, tagged = c.run(cmd)
        out.append((cmd, norm(cmd, untagged, tagged), untagged, tagged))
    c.run(b"LOGOUT")
    return out


def _ours(tmp_path, maildir: str):
    passwd = str(tmp_path / "passwd")
    set_password(passwd, "alice", "secret", "SHA256-CRYPT")
    cfg = ServerConfig(listen=["127.0.0.1:0"], authenticator=PasswdFileAuthenticator(passwd),
                       default_mail="maildir:" + maildir, login_failure_delay=0)
    return ThreadedServer(cfg).start()


def run_on_both(tmp_path, fill, session) -> tuple[list, list]:
    """`fill(dir)` builds a Maildir; Dovecot serves one copy and we serve another; `session(port)` runs
    the same commands against each. Returns (Dovecot's answers, ours)."""
    src = str(tmp_path / "src")
    fill(src)
    ours_dir = str(tmp_path / "ours")
    shutil.copytree(src, ours_dir)
    try:
        dc = Dovecot({"alice": "secret"}, extra_config=NAMESPACE)
    except DovecotUnavailable as e:
        pytest.skip(str(e))
    ours = None
    try:
        dc.load_maildir("alice", src)
        dc.start()
        ours = _ours(tmp_path, ours_dir)
        return session(dc.port("imap")), session(ours.port())
    finally:
        if ours is not None:
            ours.stop()
        dc.cleanup()


def test_same_session_same_answers(tmp_path):
    theirs, mine = run_on_both(tmp_path, _build, _session)
    diffs = []
    for (cmd, want, d_untagged, d_tagged), (_c, got, o_untagged, o_tagged) in zip(theirs, mine):
        if cmd.upper().startswith((b"STORE", b"UID STORE")) and want[:2] == got[:2] \
                and set(want[2]) <= set(got[2]):
            continue   # Dovecot reports only the messages whose flags changed; RFC 3501 all of them
        if want != got:
            diffs.append(f"== {cmd.decode()}\n-- dovecot: {d_tagged!r}\n" + "\n".join(
                repr(x) for x in d_untagged) + f"\n-- fetchdeliver: {o_tagged!r}\n" + "\n".join(
                repr(x) for x in o_untagged))
    assert not diffs, f"{len(diffs)} of {len(SESSION)} commands differ:\n" + "\n\n".join(diffs)
