"""A real Postfix (Debian 3.7) for the tests: its own config and queue in a temp dir, 127.0.0.1 only.

    pf = PostfixInstance(base_dir, user=TestUser(...), mailbox_command="...")
    pf.start(); pf.smtp_send(...); pf.wait_log(r"status=sent"); pf.stop()

What it writes (nothing outside `base_dir`, apart from the test user in /etc/passwd):
  conf/main.cf, conf/master.cf   `postfix -c conf` reads only these
  queue/                         queue_directory (the chroot of the lmtp client)
  data/                          data_directory
  maillog                        maillog_file, written by postlogd: the assertions read it
The smtpd listens on a port the kernel chose for 127.0.0.1; mail for other domains goes to
`default_transport = error:...`, so nothing leaves the machine. Postfix refuses root
(it runs its daemons as `postfix`); `postfix start/stop` need root, so the tests skip
without root or without the postfix binary.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import time

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
DOMAIN = "example.test"


def available() -> str | None:
    """None when a Postfix can run here, else why not (a skip reason)."""
    if not os.path.exists(POSTFIX):
        return "postfix is not installed (.ci/run installs it)"
    if os.geteuid() != 0:
        return "starting Postfix needs root (CI runs as root)"
    try:
        pwd.getpwnam("postfix")
    except KeyError:
        return "no postfix user (the Debian package creates it)"
    return None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class TestUser:
    """An unprivileged local user for mailbox_command / .forward deliveries (they run as the recipient)."""

    def __init__(self, name: str, home: str) -> None:
        self.name = name
        self.home = home
        subprocess.run(["userdel", name], capture_output=True)  # left over by an interrupted run
        os.makedirs(home, exist_ok=True)
        subprocess.run(["useradd", "-M", "-d", home, "-s", "/bin/sh", "-K", "MAIL_DIR=/dev/null", name],
                       check=True, capture_output=True)
        pw = pwd.getpwnam(name)
        self.uid, self.gid = pw.pw_uid, pw.pw_gid
        os.chown(home, self.uid, self.gid)
        os.chmod(home, 0o755)

    def chown_tree(self, path: str) -> None:
        for root, dirs, files in os.walk(path):
            os.chown(root, self.uid, self.gid)
            for n in files:
                os.chown(os.path.join(root, n), self.uid, self.gid)

    def remove(self) -> None:
        subprocess.run(["userdel", self.name], capture_output=True)


MASTER_CF = """\
# service type  private unpriv  chroot  wakeup  maxproc command + args
{smtp_listen} inet n       -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
# The LMTP client as Debian ships it: chrooted into the queue directory.
lmtp      unix  -       -       y       -       -       lmtp
"""


class PostfixInstance:
    def __init__(self, base: str, *, main: dict[str, str] | None = None) -> None:
        self.base = base
        self.conf = os.path.join(base, "conf")
        self.queue = os.path.join(base, "queue")
        self.data = os.path.join(base, "data")
        self.maillog = os.path.join(base, "maillog")
        self.port = free_port()
        self.extra = dict(main or {})
        self.started = False
        for d in (self.conf, self.data, self.queue):
            os.makedirs(d, exist_ok=True)
            os.chmod(d, 0o755)
        os.chmod(base, 0o755)
        pf = pwd.getpwnam("postfix")
        os.chown(self.data, pf.pw_uid, pf.pw_gid)
        self.write_config()

    def main_cf(self) -> dict[str, str]:
        cf = {
            "compatibility_level": "3.6",
            "queue_directory": self.queue,
            "data_directory": self.data,
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": "mx." + DOMAIN,
            "mydomain": DOMAIN,
            "myorigin": DOMAIN,
            "mydestination": f"{DOMAIN}, localhost",
            "mynetworks": "127.0.0.0/8",
            "inet_interfaces": "loopback-only",
            "inet_protocols": "ipv4",
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
            "default_transport": "error:this test Postfix sends nothing off the machine",
            "relay_transport": "error:this test Postfix sends nothing off the machine",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "unix:passwd.byname",
            "biff": "no",
            "maillog_file": self.maillog,
            "maillog_file_prefixes": self.base,
            "smtputf8_enable": "no",
            "recipient_delimiter": "+",
            "home_mailbox": "",
            "mail_spool_directory": os.path.join(self.base, "spool"),
            # retry fast: the deferral tests watch a retry happen
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "daemon_timeout": "60s",
            "shlib_directory": "no",
            "meta_directory": "/etc/postfix",
            "smtpd_banner": "$myhostname ESMTP test",
        }
        cf.update(self.extra)
        return cf

    def write_config(self) -> None:
        with open(os.path.join(self.conf, "main.cf"), "w") as f:
            for k, v in self.main_cf().items():
                f.write(f"{k} = {v}\n")
        with open(os.path.join(self.conf, "master.cf"), "w") as f:
            f.write(MASTER_CF.format(smtp_listen=f"127.0.0.1:{self.port}"))

    def set(self, **values: str) -> None:
        """Change main.cf and reload a running Postfix."""
        self.extra.update(values)
        self.write_config()
        if self.started:
            self._postfix("reload")

    def _postfix(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        p = subprocess.run([POSTFIX, "-c", self.conf, *args], capture_output=True, text=True, timeout=60)
        if check and p.returncode != 0:
            raise RuntimeError(f"postfix {' '.join(args)} failed ({p.returncode}):\n{p.stdout}{p.stderr}\n"
                               + self.log_text()[-3000:])
        return p

    def start(self) -> None:
        self._postfix("start")
        self.started = True
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    if s.recv(100).startswith(b"220"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("Postfix smtpd did not answer within 30 s:\n" + self.log_text()[-3000:])
            time.sleep(0.05)

    def master_pid(self) -> int | None:
        try:
            with open(os.path.join(self.queue, "pid", "master.pid")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        if not self.started:
            return
        pid = self.master_pid()
        self._postfix("stop", check=False)
        self.started = False
        if pid:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    return
                time.sleep(0.05)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def flush(self) -> None:
        """`postqueue -f`: retry every deferred message now."""
        subprocess.run(["postqueue", "-c", self.conf, "-f"], capture_output=True, timeout=60)

    # -- input and output ------------------------------------------------------------------
    def smtp_send(self, sender: str, rcpts: list[str], raw: bytes) -> dict:
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as s:
            s.ehlo("client.test")
            return s.sendmail(sender, rcpts, raw)

    def log_text(self) -> str:
        try:
            with open(self.maillog, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def wait_log(self, pattern: str, *, count: int = 1, timeout: float = 60) -> list[str]:
        """Wait until `count` lines of the maillog match `pattern`; return the matching lines."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            lines = [ln for ln in self.log_text().splitlines() if rx.search(ln)]
            if len(lines) >= count:
                return lines
            if time.monotonic() > deadline:
                raise AssertionError(f"no {count} maillog line(s) matching {pattern!r} within {timeout} s; "
                                     f"the log:\n{self.log_text()[-4000:]}")
            time.sleep(0.1)

    def delivery_lines(self, rcpt: str) -> list[str]:
        """The maillog's `to=<rcpt>, ... status=...` lines."""
        return [ln for ln in self.log_text().splitlines() if f"to=<{rcpt}>" in ln and "status=" in ln]
