"""The delivery log: one row per delivered (or rejected) message in the state database.

    delivery_log(id, at, source, sender, from_header, subject, status, dest, flags, trace, store, errors)

`dest`, `flags` and `trace` hold JSON: where the message went (["maildir:Junk"]),
the IMAP flags set, and the compact Sieve trace — the tests that matched and the
actions taken, each with its line and the source text of that line:

    [{"line": 14, "what": "header test: true", "src": "if header :contains \\"subject\\" \\"invoice\\" {"}, ...]

The engine writes a row after `process()` decided (never for a temporary failure,
which leaves the message where it was). The log is a diary, not part of the
delivery promise: its commits use `synchronous=NORMAL` (no fsync of its own;
the next durable commit of the state database carries it), and a failure to
write it is logged and never fails a message. Rows older than `[log] keep`
(default 30 days) are dropped now and then while rows are added.

Read by `fetchdeliver log [--json]` and the web page.
"""

from __future__ import annotations

import json
import os
import threading
import time

SCHEMA = """
CREATE TABLE IF NOT EXISTS delivery_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, source TEXT NOT NULL, sender TEXT NOT NULL,
    from_header TEXT NOT NULL, subject TEXT NOT NULL, status TEXT NOT NULL, dest TEXT NOT NULL,
    flags TEXT NOT NULL, trace TEXT NOT NULL, store TEXT NOT NULL, errors TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS delivery_log_at ON delivery_log (at);
"""

COLUMNS = ("id", "at", "source", "sender", "from_header", "subject", "status", "dest", "flags", "trace",
           "store", "errors")
DEFAULT_KEEP = 30 * 86400
EXPIRE_EVERY = 200        # rows added between two expiry passes
MAX_TEXT = 300            # characters kept of a header or a source line


def _log():
    import logging

    return logging.getLogger(__name__)


def database_path(state_dir: str) -> str:
    return os.path.join(state_dir, "state.sqlite")


def source_kind(source: str) -> str:
    """'MDA', 'LMTP', 'spool' or the account name, from a Message's origin."""
    if source in ("deliver", "stdin"):
        return "MDA"
    if source.startswith("lmtp"):
        return "LMTP"
    return source


def compact_trace(lines: list[str], script_path: str | None) -> list[dict]:
    """The interpreter's trace ("FILE:LINE: what") reduced to what explains a decision: tests that
    were true and actions taken, each with the text of its source line when the file is readable."""
    out: list[dict] = []
    source: list[str] | None = None
    for entry in lines:
        file, _, rest = entry.partition(":")
        num, _, what = rest.partition(": ")
        if not num.isdigit():
            out.append({"line": 0, "what": entry[:MAX_TEXT], "src": ""})
            continue
        if what.endswith(": false"):
            continue
        line = int(num)
        if source is None:
            source = []
            if script_path:
                try:
                    with open(script_path, encoding="utf-8", errors="replace") as f:
                        source = f.read().splitlines()
                except OSError:
                    pass
        src = source[line - 1].strip()[:MAX_TEXT] if 0 < line <= len(source) else ""
        item = {"line": line, "what": what[:MAX_TEXT], "src": src}
        if file and file != script_path and os.path.basename(script_path or "") != os.path.basename(file):
            item["file"] = os.path.basename(file)   # an included script
        prev = out[-1] if out else None
        if prev and prev["line"] == line and prev["what"].endswith(" test: true") and \
                what.endswith(" test: true"):
            out[-1] = item   # tests nested on one line (anyof, not): the enclosing one says it all
            continue
        out.append(item)
    return out


def describe(item: dict) -> str:
    """One trace item in words: 'rule at line 14 matched `header :contains "subject" "invoice"`'."""
    src = item.get("src", "")
    for word in ("elsif ", "if "):
        if src.startswith(word):
            src = src[len(word):]
            break
    src = src.rstrip("{").rstrip()
    what = item.get("what", "")
    if what.endswith(" test: true"):
        return f"rule at line {item['line']} matched `{src or what[:-11]}`"
    if item.get("line"):
        return f"line {item['line']}: {what}"
    return what


class Recorder:
    """Writes rows into the state database of `state_dir` (one SQLite connection per thread, opened at
    its first row: the daemon delivers from several threads)."""

    def __init__(self, state_dir: str, keep: float = DEFAULT_KEEP) -> None:
        self.state_dir = state_dir
        self.keep = keep
        self._local = threading.local()

    def _open(self):
        from fetchdeliver.state import open_database

        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        db = open_database(database_path(self.state_dir), synchronous="NORMAL")
        return db

    def record(self, message, outcome, trace: list[str], script, store_root: str = "") -> None:
        """Add the row for `message` (never raises: the log must not fail a delivery)."""
        try:
            self._insert(self.row(message, outcome, trace, script, store_root))
        except Exception as e:  # noqa: BLE001 - a diary must not cost a message
            _log().warning("delivery log not written: %s", e)

    @staticmethod
    def row(message, outcome, trace: list[str], script, store_root: str = "") -> tuple:
        dest = outcome.where()
        flags: list[str] = []
        for a in outcome.actions:
            for f in getattr(a, "flags", None) or []:
                if f not in flags:
                    flags.append(f)
        path = getattr(script, "path", None) if script is not None else None
        return (time.time(), message.origin or "", message.sender or "",
                (message.get("From") or "")[:MAX_TEXT], (message.get("Subject") or "")[:MAX_TEXT],
                outcome.status, json.dumps(dest), json.dumps(flags),
                json.dumps(compact_trace(trace, path)), store_root or "",
                json.dumps(outcome.errors[:5]))

    def _insert(self, row: tuple) -> None:
        import sqlite3

        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = self._open()
        sql = ("INSERT INTO delivery_log (at, source, sender, from_header, subject, status, dest, flags, "
               "trace, store, errors) VALUES (?,?,?,?,?,?,?,?,?,?,?)")
        try:
            cur = db.execute(sql, row)
        except sqlite3.OperationalError as e:
            if "no such table" not in str(e):
                raise
            create(db)
            cur = db.execute(sql, row)
        if cur.lastrowid and cur.lastrowid % EXPIRE_EVERY == 0:
            expire(db, self.keep)

    def close(self) -> None:
        """Close this thread's connection."""
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None


def create(db) -> None:
    for stmt in SCHEMA.strip().split(";"):
        if stmt.strip():
            db.execute(stmt)


def expire(db, keep: float, now: float | None = None) -> int:
    now = time.time() if now is None else now
    return db.execute("DELETE FROM delivery_log WHERE at < ?", (now - keep,)).rowcount


_recorders: dict[str, Recorder] = {}


def recorder_for(settings) -> Recorder | None:
    """The process's Recorder for the state directory of `settings` (None when [log] deliveries = false)."""
    table = getattr(settings, "data", {}).get("log", {})
    if not table.get("deliveries", True):
        return None
    state_dir = settings.state_dir
    rec = _recorders.get(state_dir)
    if rec is None:
        rec = _recorders[state_dir] = Recorder(state_dir, float(table.get("keep", DEFAULT_KEEP)))
    return rec


# ---------------------------------------------------------------------------
# reading

def query(state_dir: str, *, limit: int = 50, search: str = "", sender: str = "", subject: str = "",
          folder: str = "", store: str | None = None, since: float | None = None,
          before_id: int | None = None) -> list[dict]:
    """The latest rows first, as dicts (dest/flags/trace/errors decoded). `search` looks in sender,
    From, subject and destination; `store` keeps only rows delivered into that mail store."""
    import sqlite3

    path = database_path(state_dir)
    if not os.path.exists(path):
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        where: list[str] = []
        args: list[object] = []
        if search:
            where.append("(sender LIKE ? OR from_header LIKE ? OR subject LIKE ? OR dest LIKE ?)")
            args += [f"%{search}%"] * 4
        if sender:
            where.append("(sender LIKE ? OR from_header LIKE ?)")
            args += [f"%{sender}%"] * 2
        if subject:
            where.append("subject LIKE ?")
            args.append(f"%{subject}%")
        if folder:
            where.append("dest LIKE ?")
            args.append(f"%{folder}%")
        if store is not None:
            where.append("store = ?")
            args.append(store)
        if since is not None:
            where.append("at >= ?")
            args.append(since)
        if before_id is not None:
            where.append("id < ?")
            args.append(before_id)
        sql = f"SELECT {', '.join(COLUMNS)} FROM delivery_log"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(int(limit))
        try:
            rows = db.execute(sql, args).fetchall()
        except sqlite3.OperationalError:
            return []  # no delivery has been logged yet
    finally:
        db.close()
    out = []
    for r in rows:
        d = dict(zip(COLUMNS, r))
        for k in ("dest", "flags", "trace", "errors"):
            try:
                d[k] = json.loads(d[k])
            except ValueError:
                d[k] = []
        out.append(d)
    return out


def hourly_counts(state_dir: str, hours: int, *, store: str | None = None, source: str | None = None,
                  now: float | None = None) -> list[int]:
    """Messages per hour over the last `hours` hours, oldest first."""
    import sqlite3

    now = time.time() if now is None else now
    start = (int(now) // 3600 - hours + 1) * 3600
    counts = [0] * hours
    path = database_path(state_dir)
    if not os.path.exists(path):
        return counts
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        sql = "SELECT CAST((at - ?) / 3600 AS INTEGER) AS h, count(*) FROM delivery_log WHERE at >= ?"
        args: list = [start, start]
        if store is not None:
            sql += " AND store = ?"
            args.append(store)
        if source is not None:
            sql += " AND source = ?"
            args.append(source)
        try:
            for h, n in db.execute(sql + " GROUP BY h", args):
                if 0 <= h < hours:
                    counts[h] = n
        except sqlite3.OperationalError:
            pass
    finally:
        db.close()
    return counts


# ---------------------------------------------------------------------------
# `fetchdeliver log`

def add_arguments(p) -> None:
    p.add_argument("-c", "--config")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("-n", "--limit", type=int, default=50, help="how many rows (default 50)")
    p.add_argument("--from", dest="sender", default="", metavar="TEXT", help="sender contains TEXT")
    p.add_argument("--subject", default="", metavar="TEXT", help="subject contains TEXT")
    p.add_argument("--folder", default="", metavar="TEXT", help="destination contains TEXT")


def format_row(d: dict) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(d["at"]))
    where = ", ".join(d["dest"]) or ("rejected" if d["status"] == "rejected" else "nowhere (discarded)")
    lines = [f"{stamp}  {source_kind(d['source'])}  from {d['from_header'] or d['sender'] or '<>'}",
             f"    subject: {d['subject']}", f"    {d['status']}: {where}"
             + (f"  flags: {' '.join(d['flags'])}" if d["flags"] else "")]
    for item in d["trace"]:
        lines.append(f"    sieve: {describe(item)}")
    for err in d["errors"]:
        lines.append(f"    error: {err}")
    return "\n".join(lines)


def main(args) -> int:
    import sys

    from fetchdeliver.config import load_settings, report_config_error
    from fetchdeliver.errors import EX_OK, ConfigError

    try:
        settings = load_settings(args.config, required=False)
    except ConfigError as e:
        return report_config_error("fetchdeliver log", e)
    rows = query(settings.state_dir, limit=args.limit, sender=args.sender, subject=args.subject,
                 folder=args.folder)
    for d in reversed(rows):
        if args.json:
            d = dict(d, kind=source_kind(d["source"]), explained=[describe(i) for i in d["trace"]])
            print(json.dumps(d))
        else:
            print(format_row(d))
    if not rows and not args.json:
        print("no deliveries logged yet", file=sys.stderr)
    return EX_OK
