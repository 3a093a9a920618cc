"""What the daemon is doing, kept in the state database so `fetchdeliver status` can read it live.

The daemon writes one `daemon_account` row per account after every poll, and
`daemon_info` rows for its pid, start time and listeners. `status` only reads.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time

from fetchdeliver.errors import EX_OK, ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fetchdeliver.state import State


# daemon_info key prefix of an account's push plan (JSON list of {folder, state, why}).
PUSH_KEY = "push:"
# daemon_info key prefix of a server's back-off (JSON {until, reason, hits}).
SERVER_KEY = "backoff:"


class StatusWriter:
    """The daemon's side: record account results and listeners (one thread: the event loop's)."""

    def __init__(self, state: "State") -> None:
        self.state = state

    def started(self, config_path: str) -> None:
        with self.state._tx() as db:
            db.execute("DELETE FROM daemon_info")
            db.executemany("INSERT INTO daemon_info VALUES (?,?)",
                           [("pid", str(os.getpid())), ("started", repr(time.time())),
                            ("config", config_path), ("listeners", "[]")])

    def set_info(self, key: str, value: str) -> None:
        with self.state._tx() as db:
            db.execute("INSERT OR REPLACE INTO daemon_info VALUES (?,?)", (key, value))

    def listeners(self, items: list[dict]) -> None:
        self.set_info("listeners", json.dumps(items))

    def stopped(self) -> None:
        self.set_info("stopped", repr(time.time()))

    def accounts(self, names: list[str]) -> None:
        """Forget rows of accounts no longer configured."""
        with self.state._tx() as db:
            rows = [r[0] for r in db.execute("SELECT account FROM daemon_account")]
            db.executemany("DELETE FROM daemon_account WHERE account=?", [(n,) for n in rows if n not in names])
            keys = [r[0] for r in db.execute("SELECT key FROM daemon_info WHERE key LIKE 'push:%'")]
            db.executemany("DELETE FROM daemon_info WHERE key=?",
                           [(k,) for k in keys if k[len(PUSH_KEY):] not in names])

    def server(self, server: str, backoff: dict | None) -> None:
        """A server's back-off ({until, reason, hits}) or its end (None)."""
        if backoff is None:
            with self.state._tx() as db:
                db.execute("DELETE FROM daemon_info WHERE key=?", (SERVER_KEY + server,))
        else:
            self.set_info(SERVER_KEY + server, json.dumps(backoff))

    def push(self, name: str, folders: list[dict]) -> None:
        """How each folder of an `idle = true` account is watched: [{folder, state, why}]."""
        self.set_info(PUSH_KEY + name, json.dumps(folders))

    def account(self, name: str, *, mode: str, last_poll: float | None = None, result: str | None = None,
                next_poll: float | None = None, error: str | None = None, failures: int = 0) -> None:
        now = time.time()
        with self.state._tx() as db:
            row = db.execute("SELECT error, error_since, last_poll, result FROM daemon_account WHERE account=?",
                             (name,)).fetchone()
            since = None
            if error:
                since = row[1] if row and row[0] == error and row[1] else now
            if row and last_poll is None:
                last_poll, result = row[2], row[3] if result is None else result
            db.execute("INSERT OR REPLACE INTO daemon_account VALUES (?,?,?,?,?,?,?,?,?)",
                       (name, mode, last_poll, result, next_poll, error, since, failures, now))


# ---------------------------------------------------------------------------
# `fetchdeliver status`

def _when(t: float | None, now: float) -> str:
    if not t:
        return "-"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
    d = t - now
    rel = f"in {_span(d)}" if d >= 0 else f"{_span(-d)} ago"
    return f"{stamp} ({rel})"


def _span(s: float) -> str:
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_status(state_dir: str) -> dict:
    """Everything `status` shows, as plain data (also used by the tests)."""
    path = os.path.join(state_dir, "state.sqlite")
    out: dict = {"state_db": path, "info": {}, "accounts": [], "queue": None, "push": {}, "servers": {}}
    if os.path.exists(path):
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            try:
                out["info"] = dict(db.execute("SELECT key, value FROM daemon_info"))
                out["accounts"] = [
                    dict(zip(("account", "mode", "last_poll", "result", "next_poll", "error", "error_since",
                              "failures"), r))
                    for r in db.execute("SELECT account, mode, last_poll, result, next_poll, error, error_since, "
                                        "failures FROM daemon_account ORDER BY account")]
            except sqlite3.OperationalError:
                pass  # a database from before the daemon existed: no rows yet
        finally:
            db.close()
    for prefix, where in ((PUSH_KEY, "push"), (SERVER_KEY, "servers")):
        for key in [k for k in out["info"] if k.startswith(prefix)]:
            try:
                out[where][key[len(prefix):]] = json.loads(out["info"].pop(key))
            except ValueError:
                pass
    qpath = os.path.join(state_dir, "outbound", "queue.sqlite")
    if os.path.exists(qpath):
        db = sqlite3.connect(f"file:{qpath}?mode=ro", uri=True, timeout=10)
        try:
            out["queue"] = db.execute("SELECT count(*) FROM queue").fetchone()[0]
        except sqlite3.OperationalError:
            out["queue"] = 0
        finally:
            db.close()
    return out


def format_status(st: dict, configured: list[str], now: float | None = None) -> str:
    now = time.time() if now is None else now
    info = st["info"]
    lines = []
    pid = int(info["pid"]) if info.get("pid", "").isdigit() else None
    if pid and _alive(pid) and "stopped" not in info:
        started = float(info.get("started", "0") or 0)
        lines.append(f"daemon: running, pid {pid}, since {_when(started, now)}")
    elif pid:
        lines.append(f"daemon: not running (last pid {pid}, stopped {_when(float(info.get('stopped', 0)), now)})"
                     if info.get("stopped") else f"daemon: not running (last pid {pid})")
    else:
        lines.append("daemon: has not run with this state directory")
    rows = {r["account"]: r for r in st["accounts"]}
    names = list(dict.fromkeys(configured + sorted(rows)))
    lines.append("accounts:" if names else "accounts: none configured")
    for name in names:
        r = rows.get(name)
        if r is None:
            lines.append(f"  {name}: never polled")
            continue
        lines.append(f"  {name} ({r['mode']}):")
        lines.append(f"    last poll: {_when(r['last_poll'], now)}")
        lines.append(f"    result:    {r['result'] or '-'}")
        lines.append(f"    next poll: {_when(r['next_poll'], now) if r['next_poll'] else '-'}")
        folders = st.get("push", {}).get(name)
        if folders:
            lines.append("    folders:")
            for f in folders:
                lines.append(f"      {f.get('folder')}: {f.get('state')} ({f.get('why')})")
        if r["error"]:
            lines.append(f"    error:     {r['error']} (since {_when(r['error_since'], now)}, "
                         f"{r['failures']} failures in a row)")
        else:
            lines.append("    errors:    none")
    servers = st.get("servers") or {}
    running = pid and _alive(pid) and "stopped" not in info
    waiting = {k: v for k, v in servers.items() if running and float(v.get("until", 0)) > now}
    if waiting:
        lines.append("servers backing off:")
        for server, b in sorted(waiting.items()):
            hits = int(b.get("hits", 1))
            lines.append(f"  {server}: no connection until {_when(float(b['until']), now)} after "
                         f"{b.get('reason')} ({hits} throttling repl{'ies' if hits != 1 else 'y'} in a row)")
    else:
        lines.append("servers backing off: none")
    q = st["queue"]
    pgq = st.get("pg_queue")
    if pgq is not None and pgq.get("error"):
        lines.append(f"outbound queue (PostgreSQL): unknown: {pgq['error']}")
    elif pgq is not None:
        lines.append(f"outbound queue (PostgreSQL, all nodes): {q} message{'s' if q != 1 else ''}, "
                     f"{pgq['due']} due now, {pgq['sending']} being sent by a node"
                     + (f", oldest queued {_when(pgq['oldest'], now)}" if pgq.get("oldest") else ""))
    else:
        lines.append(f"outbound queue: {q if q is not None else 0} message{'s' if q != 1 else ''}")
    try:
        listeners = json.loads(info.get("listeners", "[]"))
    except ValueError:
        listeners = []
    if listeners:
        lines.append("listeners:")
        for li in listeners:
            lines.append(f"  {li.get('kind')}: {li.get('where')}")
    else:
        lines.append("listeners: none")
    return "\n".join(lines)


def read_pg_queue(url: str, now: float | None = None) -> dict:
    """The shared queue in PostgreSQL ([storage] url): {"count", "due", "sending", "oldest"}, or
    {"error": why} when the database cannot be asked."""
    now = time.time() if now is None else now
    try:
        import psycopg

        from fetchdeliver.storage.postgres import split_location

        with psycopg.connect(split_location(url)[0], connect_timeout=5) as conn:
            row = conn.execute("SELECT count(*), count(*) FILTER (WHERE next_attempt <= %s AND lease_until <= %s), "
                               "count(*) FILTER (WHERE lease_until > %s), min(created) FROM fd_queue",
                               (now, now, now)).fetchone()
    except Exception as e:   # psycopg missing, database away, schema not migrated
        return {"error": f"{type(e).__name__}: {e}".strip()}
    return {"count": int(row[0]), "due": int(row[1]), "sending": int(row[2]), "oldest": row[3]}


def main(args) -> int:
    """`fetchdeliver status [-c CONFIG]`."""
    from fetchdeliver.sources.accounts import from_settings
    from fetchdeliver.config import load_settings, report_config_error

    try:
        settings = load_settings(args.config)
    except ConfigError as e:
        return report_config_error("fetchdeliver status", e)
    configured = [a.name for a in from_settings(settings)]
    st = read_status(settings.state_dir)
    url = (settings.data.get("storage") or {}).get("url")
    if url:   # [storage] url: the queue every node shares is in PostgreSQL, not in the state directory
        st["pg_queue"] = read_pg_queue(url)
        st["queue"] = st["pg_queue"].get("count")
    if getattr(args, "json", False):
        st["configured"] = configured
        print(json.dumps(st, indent=2))
    else:
        print(format_status(st, configured))
    return EX_OK
