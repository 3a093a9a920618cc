"""What each page shows, as plain data, read for one logged-in user (`Me`). Runs in a worker thread.

A user sees what lands in their own mail store: the [[account]]s delivering there (an account's
`maildir`/`mbox`, else [delivery]'s), the delivery-log rows written into it, their own Sieve scripts
(the ManageSieve store), and the outbound queue items those accounts queued (`[web] admins` see all).
"""

from __future__ import annotations

import json
import os
import re
import time

from fetchdeliver import deliverylog

PREVIEW_COUNT = 50
DEFAULT_SCRIPT_NAME = "fetchdeliver"
_ERROR_LINE = re.compile(r"^(?P<file>.*?):(?P<line>\d+):(?P<col>\d+): error: (?P<msg>.*)$")


def when(t) -> str:
    if not t:
        return "-"
    t = float(t)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
    d = t - time.time()
    s = int(abs(d))
    span = f"{s}s" if s < 60 else f"{s // 60}m" if s < 3600 else f"{s // 3600}h{(s % 3600) // 60:02d}m" \
        if s < 86400 else f"{s // 86400}d"
    return f"{stamp} ({'in ' + span if d >= 0 else span + ' ago'})"


def explain(item: dict) -> str:
    return deliverylog.describe(item)


class Me:
    """The logged-in user and where their mail is."""

    def __init__(self, cfg, user: str, home: str, mail: str | None) -> None:
        self.cfg = cfg
        self.user = user
        self.home = home
        self.mail = mail
        self.settings = cfg.settings
        self.mail_root = self._mail_root()

    def _expand(self, path: str) -> str:
        if path == "~" or path.startswith("~/"):
            path = (self.home or os.path.expanduser("~")) + path[1:]
        return os.path.abspath(path)

    def _mail_root(self) -> str:
        if self.mail and ":" in self.mail:
            return self._expand(self.mail.split(":", 1)[1])
        d = self.settings.delivery
        path = d.get("maildir") or d.get("mbox") or ""
        return os.path.abspath(os.path.expanduser(path)) if path else ""

    @property
    def is_maildir(self) -> bool:
        if self.mail:
            return self.mail.startswith("maildir:")
        return bool(self.settings.delivery.get("maildir"))

    def accounts(self) -> list:
        from fetchdeliver.sources.accounts import from_settings

        out = []
        d = self.settings.delivery
        for a in from_settings(self.settings):
            root = a.maildir or a.mbox or d.get("maildir") or d.get("mbox") or ""
            if root and os.path.abspath(os.path.expanduser(root)) == self.mail_root:
                out.append(a)
        return out

    @property
    def admin(self) -> bool:
        admins = self.cfg.admins
        return admins is None or self.user in admins

    def script_store(self):
        from fetchdeliver.imapserver.auth import Account

        return self.cfg.sieve.store_for(Account(self.user, self.mail, self.home))


# ---------------------------------------------------------------------------
# dashboard

def dashboard(me: Me, daemon=None) -> dict:
    from fetchdeliver.daemon.status import read_status

    st = read_status(me.settings.state_dir)
    rows = {r["account"]: r for r in st["accounts"]}
    now = time.time()
    accounts = []
    for a in me.accounts():
        r = rows.get(a.name) or {}
        day = deliverylog.hourly_counts(me.settings.state_dir, 24, source=a.name, now=now)
        hours = deliverylog.hourly_counts(me.settings.state_dir, 24 * 7, source=a.name, now=now)
        week = [sum(hours[i:i + 24]) for i in range(0, len(hours), 24)]
        pushed = r.get("mode") == "idle" or (r.get("mode") is None and getattr(a, "idle", False))
        accounts.append({
            "name": a.name, "protocol": a.protocol, "host": a.host, "user": a.user,
            "folders": a.folders if a.kind.folders else [f"({a.protocol.upper()} mailbox)"],
            "mode": r.get("mode") or "-", "pushed": pushed,
            "last_poll": r.get("last_poll"), "next_poll": r.get("next_poll"), "result": r.get("result"),
            "error": r.get("error"), "error_since": r.get("error_since"), "failures": r.get("failures", 0),
            "day": day, "week": week, "today": sum(day),
        })
    info = st.get("info", {})
    if daemon is not None:
        listeners = list(getattr(daemon, "listeners", []))
        watch_hits = getattr(getattr(daemon, "notifier", None), "fired", None)
    else:
        try:
            listeners = json.loads(info.get("listeners", "[]"))
        except ValueError:
            listeners = []
        watch_hits = None
    pid = info.get("pid")
    return {"accounts": accounts, "listeners": listeners, "queue_length": st.get("queue") or 0,
            "watch_hits": watch_hits, "daemon_pid": pid, "daemon_running": daemon is not None or
            (bool(pid) and "stopped" not in info), "watch_rules": len(me.settings.data.get("watch", []))}


# ---------------------------------------------------------------------------
# deliveries

def deliveries(me: Me, filters: dict) -> list[dict]:
    return deliverylog.query(me.settings.state_dir, limit=100, store=me.mail_root, **filters)


# ---------------------------------------------------------------------------
# queue

def _queue(me: Me):
    from fetchdeliver.outbound.queue import OutboundQueue

    return OutboundQueue.from_settings(me.settings)


def _mine(me: Me, item) -> bool:
    return me.admin or item.origin in {a.name for a in me.accounts()}


def queue_items(me: Me) -> tuple[list, str | None]:
    try:
        q = _queue(me)
    except Exception as e:  # noqa: BLE001 - no [outbound] table, unreadable queue: say so on the page
        return [], str(e)
    try:
        return [i for i in q.items() if _mine(me, i)], None
    finally:
        q.close()


def queue_retry(me: Me, qid: str, daemon=None) -> str:
    q = _queue(me)
    try:
        item = q.get(qid)
        if item is None or not _mine(me, item):
            return "gone"
        q.retry_now(qid)
        if daemon is not None and getattr(daemon, "outbound", None) is not None:
            daemon.outbound.wakeup.set()   # the daemon's queue runner sends it now
        else:
            q.run_once()
        return "retried"
    finally:
        q.close()


def queue_remove(me: Me, qid: str) -> str:
    q = _queue(me)
    try:
        item = q.get(qid)
        if item is None or not _mine(me, item):
            return "gone"
        q.remove(qid)
        return "removed"
    finally:
        q.close()


# ---------------------------------------------------------------------------
# rules

def rules(me: Me) -> dict:
    store = me.script_store()
    active = store.active()
    text = ""
    if active:
        text = store.get(active).decode("utf-8", "replace")
    return {"script_name": active or DEFAULT_SCRIPT_NAME, "active": active, "names": store.names(),
            "text": text, "maildir": me.is_maildir}


def _parse_errors(text: str | None) -> list[dict]:
    out = []
    for line in (text or "").replace("\r\n", "\n").split("\n"):
        m = _ERROR_LINE.match(line)
        if m:
            out.append({"line": int(m["line"]), "column": int(m["col"]), "message": m["msg"],
                        "text": f"line {m['line']}, column {m['col']}: {m['msg']}"})
        elif line.strip():
            out.append({"line": 0, "column": 0, "message": line, "text": line})
    return out


def _normalise(text: str) -> bytes:
    return text.replace("\r\n", "\n").encode("utf-8")


def check_script(me: Me, text: str) -> list[dict]:
    """The compiler's errors (line, column, message), [] when the script compiles."""
    store = me.script_store()
    name = store.active() or DEFAULT_SCRIPT_NAME
    return _parse_errors(me.cfg.sieve.compile_errors(_normalise(text), store.path(name), name))


def save_script(me: Me, text: str) -> tuple[list[dict], str]:
    """PUTSCRIPT + SETACTIVE as ManageSieve does them: compile, store atomically, activate."""
    store = me.script_store()
    name = store.active() or DEFAULT_SCRIPT_NAME
    data = _normalise(text)
    errors = me.cfg.sieve.compile_errors(data, store.path(name), name)
    if errors:
        return _parse_errors(errors), name
    store.put(name, data)
    if store.active() != name:
        store.set_active(name)
    return [], name


def _recent_messages(root: str, count: int) -> list[tuple[str, str]]:
    """(path, folder) of the `count` newest messages of a Maildir++ store, newest first."""
    found = []
    folders = [("INBOX", root)]
    try:
        for entry in os.scandir(root):
            if entry.name.startswith(".") and entry.name not in (".", "..") and entry.is_dir():
                folders.append((entry.name[1:].replace(".", "/"), entry.path))
    except OSError:
        return []
    for folder, path in folders:
        for sub in ("cur", "new"):
            try:
                for e in os.scandir(os.path.join(path, sub)):
                    if e.is_file() and not e.name.startswith("."):
                        found.append((e.stat().st_mtime, e.path, folder))
            except OSError:
                continue
    found.sort(reverse=True)
    return [(p, f) for _m, p, f in found[:count]]


def _no_programs(program: str, args: list[str], stdin: bytes) -> bytes:
    """A preview has no side effects: vnd.dovecot.execute/filter programs are not run."""
    from fetchdeliver.errors import PermanentDeliveryError

    raise PermanentDeliveryError(f"program {program!r} is not run in a preview")


def _decision(script, message, options) -> list[str]:
    from fetchdeliver import sieve

    if script is None:
        return ["keep INBOX (no rules)"]
    result = sieve.run(script, message, sieve.SieveEnv(message, options=options, run_program=_no_programs))
    out = []
    for a in result.actions:
        t = a.type
        if t in ("keep", "fileinto"):
            box = "INBOX" if t == "keep" else a.mailbox
            flags = f" +{' '.join(a.flags)}" if getattr(a, "flags", None) else ""
            out.append(f"{'keep' if t == 'keep' else 'fileinto'} {box}{flags}")
        elif t == "redirect":
            out.append(f"redirect {a.address}")
        elif t in ("reject", "ereject"):
            out.append(t)
        else:
            out.append(t)
    out += [f"error: {e}" for e in result.errors]
    return out or ["discard"]


def preview(me: Me, text: str) -> dict:
    """What `text` would do with the user's last 50 messages, beside what the active script does."""
    from fetchdeliver import sieve
    from fetchdeliver.message import Message
    from fetchdeliver.sieve.errors import SieveCompileError

    options = me.cfg.sieve.config.sieve_options
    store = me.script_store()
    name = store.active() or DEFAULT_SCRIPT_NAME
    try:
        proposed = sieve.compile_text(text.replace("\r\n", "\n"), name, options=options)
    except SieveCompileError as e:
        return {"errors": [{"line": x.line, "column": x.column, "message": x.message,
                            "text": f"line {x.line}, column {x.column}: {x.message}"} for x in e.errors],
                "rows": []}
    current = None
    if store.active():
        try:
            current = sieve.compile_text(store.get(name).decode("utf-8", "replace"), name, options=options)
        except SieveCompileError:
            current = None
    if not me.is_maildir:
        return {"errors": [], "rows": [], "note": "The preview reads a Maildir; this mail store is an mbox."}
    rows = []
    for path, folder in _recent_messages(me.mail_root, PREVIEW_COUNT):
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except OSError:
            continue
        msg = Message(raw, sender="", recipients=[me.user], origin="web preview")
        now, new = _decision(current, msg, options), _decision(proposed, msg, options)
        rows.append({"from": (msg.get("From") or "")[:120], "subject": (msg.get("Subject") or "")[:160],
                     "folder": folder, "current": now, "proposed": new, "changed": now != new})
    return {"errors": [], "rows": rows, "changed": sum(r["changed"] for r in rows)}
