"""`fetchdeliver demo`: the whole loop on an embedded default, with nothing to set up.

1. The built-in IMAP server starts on 127.0.0.1 (a free port) with a sample mailbox
   (examples/messages) as user "remote": that is the "remote account".
2. fetchdeliver fetches from it as an [[account]] would (the same fetch code as
   `fetchdeliver fetch`), filters with examples/rules.sieve and delivers into a
   local Maildir.
3. The same server serves that Maildir as user "demo"; the login is printed so the
   user can open it in a mail client. Mail APPENDed to "remote" is fetched again
   within seconds. Ctrl-C ends it cleanly.

`--once` does steps 1-2, prints the summary and exits (for scripts and tests).
Nothing outside the demo folder is touched: a new temporary folder, removed when the demo
ends, unless --dir names one to keep.
"""

from __future__ import annotations

import os
import sys

from fetchdeliver.sources.runner import AccountRun

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fetchdeliver.imapserver.server import ThreadedServer

# How often the running demo looks at the remote account again.
POLL = 2.0


def _read_envelopes(path: str) -> list[tuple[str, str, str]]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, sender, rcpt = line.split()
            rows.append((name, sender, rcpt))
    return rows


def make_remote(path: str) -> int:
    """Fill the "remote" Maildir with the samples, each with the envelope a server would record."""
    from fetchdeliver.storage.maildir import MaildirStore
    from fetchdeliver.resources import examples_dir

    ex = examples_dir()
    if os.path.isdir(os.path.join(path, "new")) and (os.listdir(os.path.join(path, "new"))
                                                     or os.listdir(os.path.join(path, "cur"))):
        return 0  # a --dir used before: keep its remote mailbox as it is
    store = MaildirStore(path)
    n = 0
    for name, sender, rcpt in _read_envelopes(os.path.join(ex, "envelopes.txt")):
        with open(os.path.join(ex, "messages", name), "rb") as f:
            raw = f.read()
        nl = b"\r\n" if b"\r\n" in raw[:200] else b"\n"
        head = (f"Return-Path: <{sender}>".encode() + nl + f"Delivered-To: {rcpt}".encode() + nl
                + f"X-Demo-Sample: {name}".encode() + nl)
        store.deliver(head + raw, "INBOX", [])
        n += 1
    return n


class _Users:
    """The demo's two IMAP logins (random passwords, in memory only)."""

    def __init__(self, remote_dir: str, local_dir: str) -> None:
        import secrets

        self.passwords = {"remote": secrets.token_urlsafe(9), "demo": secrets.token_urlsafe(9)}
        self.mail = {"remote": "maildir:" + remote_dir, "demo": "maildir:" + local_dir}

    def authenticate(self, user: str, password: str):
        import hmac

        from fetchdeliver.imapserver.auth import Account

        want = self.passwords.get(user)
        if want is None or not hmac.compare_digest(want.encode(), password.encode()):
            return None
        return Account(user, mail=self.mail[user])


class DemoRun(AccountRun):
    """A fetch pass exactly as `fetchdeliver fetch` runs it, recording where each sample went."""

    def __init__(self, *args, results: list, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.results = results

    def _process(self, p, parsed):
        outcome = super()._process(p, parsed)
        name = (parsed.get("X-Demo-Sample") or parsed.get("Subject") or "(message)").strip()
        flags = sorted({f for act in outcome.actions for f in getattr(act, "flags", [])})
        self.results.append((name, outcome.status, [r.mailbox or r.target for r in outcome.receipts], flags))
        return outcome


class Demo:
    """The demo's server, account and local Maildir."""

    def __init__(self, target: str, out=sys.stdout) -> None:
        from fetchdeliver.resources import examples_dir

        self.target = target
        self.out = out
        self.remote_dir = os.path.join(target, "remote")
        self.maildir = os.path.join(target, "Mail")
        self.rules = os.path.join(examples_dir(), "rules.sieve")
        self.server: ThreadedServer | None = None
        self.users = _Users(self.remote_dir, self.maildir)

    def start_server(self) -> int:
        from fetchdeliver.imapserver.server import ServerConfig, ThreadedServer

        make_remote(self.remote_dir)
        os.makedirs(self.maildir, exist_ok=True)
        cfg = ServerConfig(listen=["127.0.0.1:0"], authenticator=self.users, login_failure_delay=0.5,
                           idle_poll=2.0)
        server = self.server = ThreadedServer(cfg).start()
        return server.port()

    def settings(self):
        from fetchdeliver.config import Settings

        assert self.server is not None, "start_server() first"
        return Settings({
            "delivery": {"maildir": self.maildir, "rules": self.rules,
                         "state_dir": os.path.join(self.target, "state"),
                         "cache_dir": os.path.join(self.target, "cache")},
            "account": [{"name": "remote", "protocol": "imap", "host": "127.0.0.1", "port": self.server.port(),
                         "tls": "none", "user": "remote", "password": self.users.passwords["remote"],
                         "after": "keep", "recipient": "me@example.org", "timeout": 30}]})

    def fetch(self) -> tuple[bool, list]:
        """One fetch pass from the remote account; (ok, [(sample, status, where, flags)])."""
        import io

        from fetchdeliver.sources.accounts import from_settings
        from fetchdeliver.state import State

        settings = self.settings()
        account = from_settings(settings)[0]
        results: list = []
        with State(settings.state_dir) as state:
            errors = io.StringIO()
            run = DemoRun(account, settings, state, results=results, out=io.StringIO(), err=errors)
            ok = run.run()
        if not ok:
            err = errors.getvalue().strip()
            if err:
                print(err, file=self.out)
        return ok, results

    def show(self, results: list) -> None:
        for name, status, where, flags in results:
            flag_text = f"  flags {' '.join(flags)}" if flags else ""
            print(f"  {name:22} -> {', '.join(where) or status}{flag_text}", file=self.out)
        self.out.flush()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


def _first_pass(demo: "Demo", port: int, out) -> tuple[bool, list]:
    """Say what runs where, fetch the samples through the rules once and show where they went."""
    print(f"Built-in IMAP server on 127.0.0.1:{port}; the sample mailbox is the remote account "
          "\"remote\".", file=out)
    print(f"Fetching it through {demo.rules}\ninto the Maildir {demo.maildir}\n", file=out)
    ok, results = demo.fetch()
    demo.show(results)
    return ok, results


def run_demo(target_dir: str, out=sys.stdout) -> list[tuple[str, str, list[str]]]:
    """The --once loop: serve the samples, fetch them through the rules; (sample, status, where) each."""
    demo = Demo(target_dir, out)
    port = demo.start_server()
    try:
        ok, results = _first_pass(demo, port, out)
        if not ok:
            results.append(("(fetch)", "tempfail", []))
    finally:
        demo.stop()
    print(f"\nThe filtered mail is in the Maildir {demo.maildir}", file=out)
    return [(r[0], r[1], r[2]) for r in results]


def run_forever(target_dir: str, out=sys.stdout) -> int:
    """The whole loop until Ctrl-C (SIGINT) or SIGTERM."""
    import signal
    import threading

    demo = Demo(target_dir, out)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    port = demo.start_server()
    try:
        ok, results = _first_pass(demo, port, out)
        print(f"""
Open the result in your mail client (IMAP, no encryption; it listens on 127.0.0.1 only):
  server:   127.0.0.1
  port:     {port}
  user:     demo
  password: {demo.users.passwords['demo']}
Mail you put into the remote account (user: remote, password: {demo.users.passwords['remote']})
is fetched and filtered within seconds. Ctrl-C ends the demo.""", file=out, flush=True)
        while not stop.wait(POLL):
            ok, results = demo.fetch()
            if results:
                demo.show(results)
    finally:
        demo.stop()
    print("\ndemo stopped", file=out, flush=True)
    return 0


def main(args) -> int:
    import shutil
    import tempfile

    temporary = not args.dir
    target = args.dir or tempfile.mkdtemp(prefix="fetchdeliver-demo-")
    os.makedirs(target, exist_ok=True)
    try:
        if not getattr(args, "once", False):
            return run_forever(target)
        results = run_demo(target)
        return 0 if all(status == "delivered" for _, status, _ in results) else 75
    finally:
        if temporary:
            # Nothing is left behind; `--dir DIR` keeps the demo's mail, state and server files.
            shutil.rmtree(target, ignore_errors=True)
            print(f"removed the temporary folder {target} (give --dir DIR to keep the demo's mail)",
                  flush=True)


def add_arguments(p) -> None:
    """`fetchdeliver demo` (the registry in cli.py)."""
    p.add_argument("--dir", help="where to create the demo mail (default: a new temporary folder)")
    p.add_argument("--once", action="store_true", help="fetch and filter the samples once, print the summary and exit")
