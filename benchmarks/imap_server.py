#!/usr/bin/env python3
"""IMAP server benchmark: fetchdeliver's server next to Dovecot imapd on one Maildir (issue #6).

One seeded Maildir of --count messages is copied twice; Dovecot (its own config
in a temporary directory, see tests/integration/dovecot.py) serves one copy and
`fetchdeliver imap` (a separate process) the other, both on 127.0.0.1. The same
raw IMAP client times, against each server in turn:

    LOGIN + SELECT INBOX               (first one: Dovecot builds its index, we our uidlist)
    FETCH 1:* (UID FLAGS RFC822.SIZE ENVELOPE)
    UID SEARCH HEADER Subject WORD     (by header)
    UID SEARCH BODY WORD               (by body text)
    UID FETCH 1:* BODY.PEEK[]          (every body)
    the same after COMPRESS DEFLATE    (RFC 4978; Dovecot with its imap_zlib plugin; the client inflates)
    IDLE notification latency          (a delivery into new/ until "* n EXISTS" arrives)
    UID SORT (DATE) / (SUBJECT), UID THREAD REFERENCES / ORDEREDSUBJECT,
    UID SEARCH RETURN (MIN MAX COUNT) ...        (issue #12: answers must be identical)
    QRESYNC resync: SELECT INBOX (QRESYNC (uidvalidity modseq)) after another
    session changed the flags of 100 messages  (answers: the FETCH lines, 100)

Each timed row is the median of --repeat runs after one untimed warm-up run; the
answers (number of FETCH responses, search hits, bytes) must agree or the run
says so.

Then both servers are stopped and started again (--restarts times; each row is
the median over the restarts) and the first session after each restart times
(issue #11; target: each at most 1.5x Dovecot):

    first LOGIN + SELECT INBOX         (from Dovecot's index / our fetchdeliver-index.sqlite)
    FETCH 1:* (FLAGS ENVELOPE)
    UID SEARCH HEADER Subject WORD, UID SEARCH BODY WORD
    FETCH 1:* BODY.PEEK[]
    STORE 1:500 +FLAGS (\Answered)  /  -FLAGS, alternately
    APPEND of a 2 KB message          (median of --appends)

Run as root (Dovecot's mail processes run as nobody):

    /work/main/.venv/bin/python benchmarks/imap_server.py [--count 10000] [--repeat 3] [--keep]

`--messages N` is the same as `--count N`; `--ext-only` times only the issue #12 rows (SORT,
THREAD, ESEARCH, the QRESYNC resync) after an untimed FETCH ENVELOPE and header SEARCH (what a
full run does before them in the same session), then, after each of the --restarts, the same
commands as the first of the first session (ours answers from the index's `sortkey` table, Dovecot
from its index): a short run, e.g. `--messages 10000 --ext-only`.
--postgres: our server serves the messages from a PostgreSQL 15 started for the run (issue #14).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "integration"))

WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa "
         "quebec romeo sierra tango uniform victor whiskey yankee report meeting invoice build release "
         "update review lunch travel budget draft notes").split()
HEADER_WORD = "quarterly"   # in about 1% of the subjects
BODY_WORD = "xylophone"     # in about 1% of the bodies


# -- the mail ---------------------------------------------------------------------------------------

def make_messages(n: int, seed: int) -> list[tuple[bytes, tuple[str, ...]]]:
    """n varied messages (1-20 KB, a tenth multipart) with flags: most seen, some flagged."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        subj = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(2, 7)))
        if rnd.random() < 0.01:
            subj += " " + HEADER_WORD
        lines = []
        for _ in range(int(10 ** rnd.uniform(1.2, 2.6))):
            lines.append(" ".join(rnd.choice(WORDS) for _ in range(rnd.randint(4, 12))))
        if rnd.random() < 0.01:
            lines.insert(rnd.randrange(len(lines)), f"the {BODY_WORD} is out of tune")
        text = "\n".join(lines) + "\n"
        head = (f"From: Sender {i % 97} <sender{i % 97}@example.org>\nTo: alice@example.com\n"
                f"Subject: {subj}\nMessage-ID: <bench.{i}@example.org>\n"
                f"Date: Mon, {1 + i % 28:02d} Sep 2025 {i % 24:02d}:{i % 60:02d}:00 +0000\n")
        if rnd.random() < 0.1:
            raw = (head + "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"b\"\n\n--b\n"
                   "Content-Type: text/plain; charset=utf-8\n\n" + text + "--b\n"
                   "Content-Type: application/octet-stream; name=\"a.bin\"\nContent-Transfer-Encoding: base64\n\n"
                   "QUJDREVGR0g=\n--b--\n")
        else:
            raw = head + "\n" + text
        r = rnd.random()
        flags = () if r < 0.2 else ("\\Seen",) if r < 0.9 else ("\\Seen", "\\Flagged")
        out.append((raw.encode(), flags))
    return out


def build_maildir(root: str, msgs) -> None:
    from fetchdeliver.delivery.maildir import MaildirStore

    store = MaildirStore(root, fsync=False)
    for raw, flags in msgs:
        store.deliver(raw, flags=flags)


# -- a raw client -----------------------------------------------------------------------------------

class Client:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=300)
        self.f = self.sock.makefile("rb", buffering=1 << 16)
        self.n = 0
        self.f.readline()

    def read(self) -> bytes:
        """One response, literals included."""
        out = self.f.readline()
        while out.endswith(b"}\r\n"):
            size = int(out[out.rindex(b"{") + 1:-3])
            out += self.f.read(size) + self.f.readline()
        return out

    def send(self, text: str) -> str:
        self.n += 1
        tag = f"b{self.n}"
        self.sock.sendall(f"{tag} {text}\r\n".encode())
        return tag

    def command(self, text: str) -> tuple[list[bytes], int]:
        """(untagged responses, total bytes); raises unless the answer is OK."""
        tag = self.send(text).encode() + b" "
        lines, size = [], 0
        while True:
            r = self.read()
            if not r:
                raise EOFError(text)
            size += len(r)
            if r.startswith(tag):
                if not r[len(tag):].startswith(b"OK"):
                    raise RuntimeError(f"{text}: {r!r}")
                return lines, size
            lines.append(r)

    def close(self) -> None:
        try:
            self.command("LOGOUT")
        except (OSError, EOFError, RuntimeError):
            pass
        self.sock.close()


class _Inflating:
    """A file-like reader over a raw-DEFLATE socket stream (what the server sends after COMPRESS)."""

    def __init__(self, sock) -> None:
        import zlib

        self.sock = sock
        self.z = zlib.decompressobj(-15)
        self.buf = bytearray()

    def _fill(self) -> bool:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            return False
        self.buf += self.z.decompress(chunk)
        return True

    def readline(self) -> bytes:
        start = 0
        while True:
            i = self.buf.find(b"\n", start)
            if i >= 0:
                out = bytes(self.buf[:i + 1])
                del self.buf[:i + 1]
                return out
            start = len(self.buf)
            if not self._fill():
                out = bytes(self.buf)
                self.buf.clear()
                return out

    def read(self, size: int) -> bytes:
        while len(self.buf) < size and self._fill():
            pass
        out = bytes(self.buf[:size])
        del self.buf[:size]
        return out


class DeflateClient(Client):
    """Client that switches to COMPRESS=DEFLATE after login."""

    z_out = None

    def compress(self) -> None:
        import zlib

        self.command("COMPRESS DEFLATE")
        self.z_out = zlib.compressobj(6, zlib.DEFLATED, -15)
        self.f = _Inflating(self.sock)

    def send(self, text: str) -> str:
        if self.z_out is None:
            return super().send(text)
        import zlib

        self.n += 1
        tag = f"b{self.n}"
        self.sock.sendall(self.z_out.compress(f"{tag} {text}\r\n".encode()) + self.z_out.flush(zlib.Z_SYNC_FLUSH))
        return tag


def compressed_fetch(port: int) -> tuple[float, object]:
    c = DeflateClient(port)
    c.command("LOGIN alice secret")
    c.compress()
    c.command("SELECT INBOX")
    try:
        return _timed(c, "UID FETCH 1:* BODY.PEEK[]")
    finally:
        c.close()


def _login_select(port: int) -> tuple[Client, float]:
    t = time.perf_counter()
    c = Client(port)
    c.command("LOGIN alice secret")
    c.command("SELECT INBOX")
    return c, time.perf_counter() - t


def _timed(c: Client, text: str) -> tuple[float, object]:
    t = time.perf_counter()
    lines, size = c.command(text)
    took = time.perf_counter() - t
    if "SEARCH" in text:
        answer = sorted(int(x) for ln in lines if ln.startswith(b"* SEARCH") for x in ln.split()[2:])
    else:
        answer = sum(1 for ln in lines if b" FETCH " in ln[:20])   # byte counts differ (quoting)
    return took, answer


OPS = [
    ("FETCH 1:* (UID FLAGS RFC822.SIZE ENVELOPE)", "FETCH 1:* (UID FLAGS RFC822.SIZE ENVELOPE)"),
    ("UID SEARCH by header (Subject)", f"UID SEARCH HEADER Subject {HEADER_WORD}"),
    ("UID SEARCH by body text", f"UID SEARCH BODY {BODY_WORD}"),
    ("fetch every body (BODY.PEEK[])", "UID FETCH 1:* BODY.PEEK[]"),
]


EXT_OPS = [
    ("UID SORT (DATE)", "UID SORT (DATE) UTF-8 ALL"),
    ("UID SORT (SUBJECT)", "UID SORT (SUBJECT) UTF-8 ALL"),
    ("UID THREAD REFERENCES", "UID THREAD REFERENCES UTF-8 ALL"),
    ("UID THREAD ORDEREDSUBJECT", "UID THREAD ORDEREDSUBJECT UTF-8 ALL"),
    ("ESEARCH RETURN (MIN MAX COUNT) UNSEEN", "UID SEARCH RETURN (MIN MAX COUNT) UNSEEN"),
    ("ESEARCH RETURN (ALL) by header (Subject)", f"UID SEARCH RETURN (ALL) HEADER Subject {HEADER_WORD}"),
]


def _timed_ext(c: Client, text: str) -> tuple[float, object]:
    """Time one command; its answer is the untagged text (the ESEARCH tag left out)."""
    t = time.perf_counter()
    lines, _ = c.command(text)
    took = time.perf_counter() - t
    answer = [ln.split(b") ", 1)[1].strip() if ln.startswith(b"* ESEARCH (TAG") else ln.strip() for ln in lines]
    return took, answer


def qresync_resync(port: int, rep: int, changed: int = 100) -> tuple[float, int]:
    """(time of SELECT (QRESYNC ...) after `changed` messages' flags changed, FETCH lines it sent)."""
    c = Client(port)
    c.command("LOGIN alice secret")
    c.command("ENABLE QRESYNC")
    lines, _ = c.command("SELECT INBOX")
    text = b"".join(lines)
    uidvalidity = int(text.split(b"[UIDVALIDITY ")[1].split(b"]")[0])
    hms = int(text.split(b"[HIGHESTMODSEQ ")[1].split(b"]")[0])
    n = int(next(ln.split()[1] for ln in lines if ln.endswith(b" EXISTS\r\n")))
    step = max(n // changed, 1)
    seqs = ",".join(str(1 + i * step) for i in range(min(changed, n)))
    c.command(f"STORE {seqs} {'+' if rep % 2 == 0 else '-'}FLAGS.SILENT ($Resync)")
    c.close()
    c = Client(port)
    c.command("LOGIN alice secret")
    c.command("ENABLE QRESYNC")
    t = time.perf_counter()
    lines, _ = c.command(f"SELECT INBOX (QRESYNC ({uidvalidity} {hms}))")
    took = time.perf_counter() - t
    c.close()
    return took, sum(1 for ln in lines if b" FETCH " in ln[:20])


def idle_latency(port: int, deliver, repeat: int) -> list[float]:
    """Seconds from a message's rename into new/ until the IDLEing client reads `* n EXISTS`."""
    c, _ = _login_select(port)
    out = []
    try:
        for i in range(repeat):
            tag = c.send("IDLE")
            while not c.read().startswith(b"+"):
                pass
            t = deliver(i)
            while True:
                r = c.read()
                if not r:
                    raise EOFError("IDLE")
                if r.endswith(b" EXISTS\r\n"):
                    out.append(time.perf_counter() - t)
                    break
            c.sock.sendall(b"DONE\r\n")
            while not c.read().startswith(tag.encode() + b" "):
                pass
    finally:
        c.close()
    return out


RESTART_OPS = [
    ("after restart: FETCH 1:* (FLAGS ENVELOPE)", "FETCH 1:* (FLAGS ENVELOPE)"),
    ("after restart: UID SEARCH HEADER Subject", f"UID SEARCH HEADER Subject {HEADER_WORD}"),
    ("after restart: UID SEARCH BODY", f"UID SEARCH BODY {BODY_WORD}"),
    ("after restart: FETCH 1:* BODY.PEEK[]", "FETCH 1:* BODY.PEEK[]"),
]
APPEND_MSG = ("From: bench@example.org\r\nTo: alice@example.com\r\nSubject: appended\r\n"
              "Message-ID: <append.{n}@example.org>\r\n\r\n" + "appended line of text\r\n" * 90)


def after_restart(port: int, cycle: int, appends: int, ext_only: bool = False) -> dict:
    """The first session on a freshly started server: {row: (seconds, answer)}."""
    res: dict = {}
    c, took = _login_select(port)
    res["after restart: first LOGIN + SELECT"] = (took, None)
    if ext_only:        # the first SORT / THREAD / ESEARCH after a restart (from our index's sortkey table)
        for label, cmd in EXT_OPS:
            res["after restart: " + label] = _timed_ext(c, cmd)
        c.close()
        return res
    for label, cmd in RESTART_OPS:
        res[label] = _timed(c, cmd)
    sign = "+" if cycle % 2 == 0 else "-"
    res["after restart: STORE 1:500 " + "+/-FLAGS (\\Answered)"] = _timed(c, f"STORE 1:500 {sign}FLAGS (\\Answered)")
    times = []
    for i in range(appends):
        body = APPEND_MSG.format(n=f"{cycle}.{i}").encode()
        t = time.perf_counter()
        tag = c.send(f"APPEND INBOX {{{len(body)}+}}")
        c.sock.sendall(body + b"\r\n")
        while True:
            r = c.read()
            if r.startswith(tag.encode() + b" "):
                if b" OK" not in r[:len(tag) + 4]:
                    raise RuntimeError(f"APPEND: {r!r}")
                break
        times.append(time.perf_counter() - t)
    res["after restart: APPEND (each)"] = (statistics.median(times), None)
    c.close()
    return res


def run_server(name: str, port: int, deliver, args) -> dict:
    """Every timed row for one server: {row: (seconds, answer)}."""
    res: dict = {}
    c, first = _login_select(port)
    res["first LOGIN + SELECT (index / uidlist built)"] = (first, None)
    if args.ext_only:       # the commands before the EXT_OPS in a full run, untimed
        _timed(c, "FETCH 1:* (UID FLAGS RFC822.SIZE ENVELOPE)")
        _timed(c, f"UID SEARCH HEADER Subject {HEADER_WORD}")
    c.close()
    for rep in range(args.repeat + 1):   # run 0 is the warm-up
        c, took = _login_select(port)
        rows = [("LOGIN + SELECT INBOX", took, None)]
        for label, cmd in [] if args.ext_only else OPS:
            t, answer = _timed(c, cmd)
            rows.append((label, t, answer))
        for label, cmd in EXT_OPS:
            t, answer = _timed_ext(c, cmd)
            rows.append((label, t, answer))
        c.close()
        if not args.ext_only:
            t, answer = compressed_fetch(port)
            rows.append(("fetch every body, COMPRESS=DEFLATE", t, answer))
        t, answer = qresync_resync(port, rep)
        rows.append(("QRESYNC resync, 100 changed (SELECT)", t, answer))
        if rep:
            for label, t, answer in rows:
                res.setdefault(label, ([], answer))[0].append(t)
    for label, (ts, answer) in list(res.items()):
        if isinstance(ts, list):
            res[label] = (statistics.median(ts), answer)
    if not args.ext_only:
        lat = idle_latency(port, deliver, args.idle_repeat)
        res["IDLE: delivery -> EXISTS"] = (statistics.median(lat), None)
    print(f"  {name}: done", flush=True)
    return res


# -- the servers ------------------------------------------------------------------------------------

def start_ours(work: str, maildir: str, pg_url: str | None = None) -> tuple[subprocess.Popen, int]:
    passwd = os.path.join(work, "fd-passwd")
    with open(passwd, "w") as f:   # {PLAIN}, as in Dovecot's test passwd-file: LOGIN costs no hashing
        f.write("alice:{PLAIN}secret\n")
    conf = os.path.join(work, "fd-config.toml")
    with open(conf, "w") as f:
        store = f'[storage]\nurl = "{pg_url}"\n' if pg_url else f'[delivery]\nmaildir = "{maildir}"\n'
        f.write(f'{store}\n[imap]\nlisten = "127.0.0.1:0"\n'
                f'passwd_file = "{passwd}"\nlogin_failure_delay = "0s"\n')
    env = dict(os.environ, PYTHONPATH=str(REPO), XDG_CACHE_HOME=os.path.join(work, "xdg-cache"),
               XDG_CONFIG_HOME=os.path.join(work, "xdg-config"))
    proc = subprocess.Popen([sys.executable, "-m", "fetchdeliver", "imap", "-c", conf],
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            raise RuntimeError("fetchdeliver imap exited before listening")
        if "listening on 127.0.0.1:" in line:
            return proc, int(line.rsplit(":", 1)[1])
    raise RuntimeError("fetchdeliver imap did not start listening")


def _deliverer(maildir: str, uid: int, gid: int):
    """A function that drops one message into maildir/new/ and returns the time of the rename."""
    def deliver(i: int) -> float:
        name = f"{int(time.time())}.M{i}P{os.getpid()}.bench"
        tmp = os.path.join(maildir, "tmp", name)
        with open(tmp, "wb") as f:
            f.write(f"From: idle@example.org\nSubject: idle {i}\n\nwake up\n".encode())
        os.chown(tmp, uid, gid)
        t = time.perf_counter()
        os.rename(tmp, os.path.join(maildir, "new", name))
        return t
    return deliver


def _pg_deliverer(url: str):
    """A function that delivers one message into alice's INBOX in PostgreSQL; the time just before
    (the commit, inside, is when the message becomes visible)."""
    from fetchdeliver.storage.postgres import PostgresStore

    store = PostgresStore(url, user="alice")

    def deliver(i: int) -> float:
        t = time.perf_counter()
        store.deliver(f"From: idle@example.org\nSubject: idle {i}\n\nwake up\n".encode())
        return t
    return deliver


def load_postgres(url: str, msgs) -> None:
    """The messages into alice's INBOX of a migrated database, in the Maildir's order."""
    import psycopg

    from fetchdeliver.storage import pgschema
    from fetchdeliver.storage.postgres import PostgresStore

    with psycopg.connect(url, autocommit=True) as conn:
        pgschema.migrate(conn)
    mbox = PostgresStore(url, user="alice").open("INBOX")
    for raw, flags in msgs:
        mbox.append(raw, flags)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", "--messages", type=int, default=10000, dest="count",
                    help="messages in the Maildir (default 10000)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per row, the median is shown")
    ap.add_argument("--idle-repeat", type=int, default=5, help="deliveries for the IDLE latency")
    ap.add_argument("--restarts", type=int, default=3, help="restarts of both servers (median shown)")
    ap.add_argument("--appends", type=int, default=20, help="APPENDs timed after each restart")
    ap.add_argument("--seed", type=int, default=6)
    ap.add_argument("--dir", default="/tmp", help="where the temporary directory goes")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--restart-only", action="store_true",
                    help="only the first session after each restart (the issue #11 rows): a short run")
    ap.add_argument("--ext-only", action="store_true",
                    help="only the issue #12 rows (SORT, THREAD, ESEARCH, QRESYNC), and the same commands "
                         "as the first of a session after each restart: a short run")
    ap.add_argument("--postgres", action="store_true",
                    help="fetchdeliver serves the same messages from PostgreSQL 15 ([storage] url, a server "
                         "started for the run) instead of its Maildir copy; Dovecot stays on its Maildir")
    args = ap.parse_args()

    from dovecot import Dovecot, DovecotUnavailable

    work = tempfile.mkdtemp(prefix="fd-imapbench-", dir=args.dir)
    os.chmod(work, 0o755)
    dc = ours = pg = None
    pg_url = None
    try:
        print(f"building a Maildir of {args.count} messages in {work}", flush=True)
        src = os.path.join(work, "src")
        msgs = make_messages(args.count, args.seed)
        build_maildir(src, msgs)
        if args.postgres:
            from postgres_support import PostgresServer

            pg = PostgresServer().start()
            pg_url = pg.new_database()
            load_postgres(pg_url, msgs)
        mine = os.path.join(work, "fd-Maildir")
        shutil.copytree(src, mine)
        try:
            dc = Dovecot({"alice": "secret"},
                         extra_config="namespace inbox {\n  inbox = yes\n  separator = /\n  prefix =\n}\n"
                                      "mail_plugins = $mail_plugins zlib\n"
                                      "protocol imap {\n  mail_plugins = $mail_plugins imap_zlib\n}\n")
        except DovecotUnavailable as e:
            print(f"Dovecot is needed: {e}", file=sys.stderr)
            return 2
        theirs = dc.load_maildir("alice", src)
        dc.start()
        ours, port = start_ours(work, mine, pg_url)
        ours_deliver = _pg_deliverer(pg_url) if pg_url else _deliverer(mine, os.getuid(), os.getgid())
        if args.restart_only:
            # The first sessions number the Maildir (Dovecot builds its index, we the uidlist and ours).
            results = {"fetchdeliver": {}, "Dovecot": {}}
            for name, p in (("fetchdeliver", port), ("Dovecot", dc.port("imap"))):
                c, took = _login_select(p)
                results[name]["first LOGIN + SELECT (index / uidlist built)"] = (took, None)
                _timed(c, "FETCH 1:* (FLAGS ENVELOPE)")
                _timed(c, f"UID SEARCH HEADER Subject {HEADER_WORD}")
                c.close()
        else:
            results = {
                "fetchdeliver": run_server("fetchdeliver", port, ours_deliver, args),
                "Dovecot": run_server("Dovecot", dc.port("imap"), _deliverer(theirs, dc.mail_uid, dc.mail_gid),
                                      args),
            }
        per: dict = {"fetchdeliver": {}, "Dovecot": {}}
        for cycle in range(args.restarts):
            os.killpg(ours.pid, signal.SIGTERM)
            ours.wait(30)
            ours = None
            dc.stop(graceful=True)
            ours, port = start_ours(work, mine, pg_url)
            dc.start()
            for name, p in (("fetchdeliver", port), ("Dovecot", dc.port("imap"))):
                for label, (t, answer) in after_restart(p, cycle, args.appends, args.ext_only).items():
                    per[name].setdefault(label, ([], answer))[0].append(t)
            print(f"  restart {cycle + 1}/{args.restarts}: done", flush=True)
        for name, rows in per.items():
            for label, (ts, answer) in rows.items():
                results[name][label] = (statistics.median(ts), answer)
    finally:
        if ours is not None:
            os.killpg(ours.pid, signal.SIGTERM)
            ours.wait(30)
        if dc is not None:
            dc.cleanup()
        if pg is not None:
            pg.cleanup()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    ok = True
    print(f"\n{args.count} messages{' (ours in PostgreSQL)' if args.postgres else ''}, median of {args.repeat} runs (IDLE: of {args.idle_repeat} deliveries; "
          f"after restart: of {args.restarts} restarts)\n")
    print(f"{'operation':46s} {'fetchdeliver':>13s} {'Dovecot':>10s} {'ours/Dovecot':>13s}")
    for label, (t_ours, a_ours) in results["fetchdeliver"].items():
        t_dc, a_dc = results["Dovecot"][label]
        note = ""
        if a_ours != a_dc:
            ok = False
            note = "  answers differ!"
        unit = 1000.0
        print(f"{label:46s} {t_ours * unit:10.1f} ms {t_dc * unit:7.1f} ms {t_ours / t_dc:12.2f}x{note}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
