"""A submission world for tests and the benchmark: passwd-file users, a relay sink, the queue and
its runner, and the server on 127.0.0.1 with an ephemeral port; `stop()` stops them all."""

from __future__ import annotations

import os
import textwrap
import time

from smtp_sinks import Sink

from fetchdeliver.config import parse_file
from fetchdeliver.outbound.queue import OutboundQueue, QueueRunner
from fetchdeliver.submission.command import build_config
from fetchdeliver.submission.server import ThreadedServer

USERS = {
    # user: (password, extra passwd-file fields)
    "alice": ("secret", "addresses=alice@example.org,a.smith@example.org"),
    "bob": ("secret2", "address=bob@example.net"),
}


class Args:
    listen = tls_listen = cert = key = None


def maildir_of(root, user: str) -> str:
    return os.path.join(str(root), "home", user, "Maildir")


def files(folder: str, sub: str = "new") -> list[str]:
    d = os.path.join(folder, sub)
    return sorted(os.path.join(d, n) for n in os.listdir(d)) if os.path.isdir(d) else []


def wait_for(cond, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class World:
    def __init__(self, root, *, submission: str = "", rcpt_policy=None, ssl_files=None, tls_listen=False,
                 fsync: bool = True) -> None:
        root = str(root)
        self.root = root
        lines = []
        for user, (pw, extra) in USERS.items():
            home = os.path.join(root, "home", user)
            os.makedirs(home, exist_ok=True)
            lines.append(f"{user}:{{PLAIN}}{pw}::::{home}::userdb_mail=maildir:~/Maildir {extra}\n")
        self.passwd = os.path.join(root, "passwd")
        with open(self.passwd, "w") as f:
            f.writelines(lines)
        self.sink = Sink(rcpt_policy=rcpt_policy)
        tls = ""
        if ssl_files:
            cert, key = ssl_files
            tls = f'cert = "{cert}"\nkey = "{key}"\n'
            if tls_listen:
                tls += 'tls_listen = "127.0.0.1:0"\n'
        text = textwrap.dedent(f"""
            [delivery]
            maildir = "{root}/shared"
            state_dir = "{root}/state"
            cache_dir = "{root}/cache"
            fsync = {"true" if fsync else "false"}

            [relay]
            host = "127.0.0.1"
            port = {self.sink.port}
            tls = "none"

            [queue]
            retry = ["1s"]
            hostname = "mail.test"
            interval = "1s"

            [submission]
            listen = "127.0.0.1:0"
            passwd_file = "{self.passwd}"
            login_failure_delay = 0
            hostname = "mail.test"
            """) + tls + textwrap.dedent(submission)
        self.config_file = os.path.join(root, "config.toml")
        with open(self.config_file, "w") as f:
            f.write(text)
        self.cfg = build_config(Args(), parse_file(self.config_file), self.config_file)
        self.queue = OutboundQueue.from_settings(self.cfg.settings)
        self.runner = QueueRunner(self.queue)
        self.runner.start()
        self.server = ThreadedServer(self.cfg, self.queue).start()
        self.port = self.server.port()

    @property
    def tls_port(self) -> int:
        return self.server.port(tls=True)

    def sent(self, user: str = "alice") -> list[str]:
        return files(os.path.join(maildir_of(self.root, user), ".Sent"), "cur")

    def inbox(self, user: str) -> list[str]:
        return files(maildir_of(self.root, user))

    def stop(self) -> None:
        self.server.stop()
        self.runner.stop(timeout=10)
        self.sink.stop()
