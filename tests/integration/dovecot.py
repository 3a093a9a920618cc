"""A real Dovecot (IMAP + POP3, later LMTP) started for a test, on 127.0.0.1 with ephemeral ports.

Everything lives in one temporary directory: the config, base_dir, logs, a
passwd-file and the users' Maildirs. Listeners: plain (STARTTLS offered) and
implicit TLS for each protocol, with a certificate from a test CA made by
`trustme`. The master runs in the foreground (`dovecot -F -c CONF`) in its own
process group and is stopped by its PID.

    with Dovecot.running(users={"alice": "secret"}) as dc:
        dc.append("alice", b"Subject: hi\\r\\n\\r\\nbody\\r\\n")
        dc.port("imaps"), dc.ca_file, dc.fingerprint
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time

LISTENERS = {
    # name: (service, ssl)
    "imap": ("imap-login", False),
    "imaps": ("imap-login", True),
    "pop3": ("pop3-login", False),
    "pop3s": ("pop3-login", True),
}


class DovecotUnavailable(Exception):
    """Dovecot (or a part of it) is not installed: tests should skip."""


def find_dovecot() -> str:
    exe = shutil.which("dovecot") or ("/usr/sbin/dovecot" if os.path.exists("/usr/sbin/dovecot") else None)
    if exe is None:
        raise DovecotUnavailable("dovecot is not installed (apt-get install dovecot-core dovecot-imapd "
                                 "dovecot-pop3d)")
    for proto in ("imap", "pop3"):
        if not os.path.exists(f"/usr/lib/dovecot/{proto}"):
            raise DovecotUnavailable(f"dovecot-{proto}d is not installed (/usr/lib/dovecot/{proto} missing)")
    return exe


def free_ports(n: int) -> list[int]:
    """n distinct ports the kernel says are free right now (the caller accepts the small race)."""
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def closed_port() -> int:
    """A 127.0.0.1 port with nothing listening (connections are refused)."""
    return free_ports(1)[0]


class Dovecot:
    """One Dovecot instance. Use `Dovecot.running(...)` or start()/stop() in a finally."""

    def __init__(self, users: dict[str, str] | None = None, *, apop: bool = False,
                 protocols: tuple[str, ...] = ("imap", "pop3"), extra_config: str = "",
                 oauth2_introspection_url: str | None = None, extra_mechanisms: str = "",
                 notify: bool | None = None, auth_outage: bool = False,
                 user_extra: dict[str, str] | None = None) -> None:
        self.exe = find_dovecot()
        # user_extra: {user: "userdb_quota_rule=*:storage=100K ..."}, the passwd-file's extra fields
        self.user_extra = dict(user_extra or {})
        # auth_outage: a first passdb that fails *temporarily* while `outage_flag` exists, so Dovecot
        # answers LOGIN with "NO [UNAVAILABLE] Temporary authentication failure" (its auth backend down).
        self.auth_outage = auth_outage
        # NOTIFY (RFC 5465) is offered only with the mailbox list index (Dovecot's default: on).
        # None leaves Dovecot's default; True/False set mailbox_list_index.
        self.notify = notify
        import trustme  # test dependency; imported here so a missing one is a clear error

        self.users = dict(users or {"alice": "secret"})
        self.apop = apop
        self.protocols = protocols
        self.extra_config = extra_config
        # XOAUTH2/OAUTHBEARER: Dovecot's oauth2 passdb asks this URL (RFC 7662 style, POST token=...)
        # and expects {"active": true, "username": USER}.
        self.oauth2_introspection_url = oauth2_introspection_url
        self.extra_mechanisms = extra_mechanisms     # e.g. "scram-sha-256" (auth_mechanisms)
        self.root = tempfile.mkdtemp(prefix="fd-dovecot-", dir="/tmp")
        # Dovecot's login and mail processes run as other users: they must be able to walk in.
        os.chmod(self.root, 0o755)
        self.ca = trustme.CA()
        self.cert = self.ca.issue_cert("127.0.0.1", "localhost", common_name="127.0.0.1")
        self.ca_file = os.path.join(self.root, "ca.pem")
        self.ca.cert_pem.write_to_path(self.ca_file)
        self.cert_file = os.path.join(self.root, "server.pem")
        self.cert.private_key_and_cert_chain_pem.write_to_path(self.cert_file)
        os.chmod(self.cert_file, 0o600)
        der = ssl.PEM_cert_to_DER_cert(self.cert.cert_chain_pems[0].bytes().decode())
        self.fingerprint = hashlib.sha256(der).hexdigest()
        self.conf = os.path.join(self.root, "dovecot.conf")
        self.log = os.path.join(self.root, "dovecot.log")
        self.mail_root = os.path.join(self.root, "mail")
        self.ports: dict[str, int] = {}
        self.proc: subprocess.Popen | None = None
        if os.geteuid() == 0:
            pw = pwd.getpwnam("nobody")
            self.mail_uid, self.mail_gid = pw.pw_uid, pw.pw_gid
        else:
            self.mail_uid, self.mail_gid = os.getuid(), os.getgid()
        os.makedirs(self.mail_root)
        os.chown(self.mail_root, self.mail_uid, self.mail_gid)
        self._write_passwd()
        for user in self.users:
            self.maildir(user)

    # -- configuration --------------------------------------------------------
    def _write_passwd(self) -> None:
        lines = [f"{u}:{{PLAIN}}{p}:{self.mail_uid}:{self.mail_gid}::{self.home(u)}"
                 f"{'::' + self.user_extra[u] if self.user_extra.get(u) else ''}\n"
                 for u, p in self.users.items()]
        path = os.path.join(self.root, "passwd")
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(lines)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)

    def add_user(self, user: str, password: str) -> None:
        """Add a user; passwd-file is re-read by Dovecot when it changes."""
        self.users[user] = password
        self._write_passwd()
        self.maildir(user)

    @property
    def passwd_file(self) -> str:
        """The passwd-file Dovecot's passdb and userdb read (extra fields: `user_extra`)."""
        return os.path.join(self.root, "passwd")

    def home(self, user: str) -> str:
        return os.path.join(self.mail_root, user)

    def _config_text(self) -> str:
        r = self.root
        mechs = "plain login" + (" apop" if self.apop else "")
        if self.extra_mechanisms:
            mechs += " " + self.extra_mechanisms
        oauth2 = ""
        if self.oauth2_introspection_url:
            mechs += " xoauth2 oauthbearer"
            ext = os.path.join(r, "oauth2.conf.ext")
            with open(ext, "w") as f:
                f.write(f"introspection_mode = post\nintrospection_url = {self.oauth2_introspection_url}\n"
                        "username_attribute = username\nactive_attribute = active\nactive_value = true\n")
            oauth2 = f"passdb {{\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n  args = {ext}\n}}\n"
        outage = ""
        if self.auth_outage:
            script = os.path.join(r, "outage-check")
            with open(script, "w") as f:
                # checkpassword: exit 111 is a temporary failure; 1 lets the next passdb decide.
                f.write(f"#!/bin/sh\n[ -e {self.outage_flag} ] && exit 111\nexit 1\n")
            os.chmod(script, 0o755)
            outage = (f"passdb {{\n  driver = checkpassword\n  args = {script}\n"
                      "  result_failure = continue\n  result_internalfail = return-fail\n}\n")
        listeners = {"imap-login": [], "pop3-login": []}
        for name, (service, is_ssl) in LISTENERS.items():
            listeners[service].append(
                f"  inet_listener {name} {{\n    address = 127.0.0.1\n    port = {self.ports[name]}\n"
                f"    ssl = {'yes' if is_ssl else 'no'}\n  }}\n")
        services = "".join(f"service {svc} {{\n{''.join(ls)}}}\n" for svc, ls in listeners.items())
        users = ""
        if os.geteuid() != 0:
            me = pwd.getpwuid(os.getuid()).pw_name
            users = (f"default_internal_user = {me}\ndefault_login_user = {me}\n"
                     "service imap-login {\n  chroot =\n}\nservice pop3-login {\n  chroot =\n}\n")
        else:
            users = f"mail_uid = {self.mail_uid}\nmail_gid = {self.mail_gid}\n"
        return f"""# written by tests/integration/dovecot.py
base_dir = {r}/run
state_dir = {r}/state
log_path = {self.log}
protocols = {' '.join(self.protocols)}
listen = 127.0.0.1
ssl = yes
ssl_cert = <{self.cert_file}
ssl_key = <{self.cert_file}
ssl_dh = <{self._dh_file()}
disable_plaintext_auth = no
auth_mechanisms = {mechs}
# Wrong-password tests should not wait: no failure delay, no per-IP penalty.
auth_failure_delay = 0
login_trusted_networks = 127.0.0.0/8
{outage}service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {r}/passwd
}}
{oauth2}userdb {{
  driver = passwd-file
  args = username_format=%u {r}/passwd
}}
mail_location = maildir:~/Maildir
{'' if self.notify is None else f"mailbox_list_index = {'yes' if self.notify else 'no'}"}
first_valid_uid = 0
first_valid_gid = 0
pop3_uidl_format = %08Xu%08Xv
{users}
{services}
{self.extra_config}
"""

    def _dh_file(self) -> str:
        for p in ("/usr/share/dovecot/dh.pem", "/etc/dovecot/dh.pem"):
            if os.path.exists(p):
                return p
        raise DovecotUnavailable("no Dovecot dh.pem found (needed by ssl_dh in Dovecot 2.3)")

    # -- life cycle -----------------------------------------------------------
    def start(self, timeout: float = 20.0) -> "Dovecot":
        last_log = ""
        for _attempt in range(5):
            ports = free_ports(len(LISTENERS))
            self.ports = dict(zip(LISTENERS, ports))
            with open(self.conf, "w") as f:
                f.write(self._config_text())
            os.makedirs(os.path.join(self.root, "run"), exist_ok=True)
            os.makedirs(os.path.join(self.root, "state"), exist_ok=True)
            if os.path.exists(self.log):
                os.unlink(self.log)
            self.proc = subprocess.Popen([self.exe, "-F", "-c", self.conf], stdout=subprocess.DEVNULL,
                                         stderr=open(os.path.join(self.root, "stderr.log"), "ab"),
                                         start_new_session=True)
            if self._wait_ready(timeout):
                return self
            last_log = self.read_log()
            self._reap()
            if "in use" not in last_log:
                break
        raise RuntimeError(f"Dovecot did not start; log:\n{last_log}")

    def _wait_ready(self, timeout: float) -> bool:
        """True once every listener accepts connections; False if the master died."""
        deadline = time.monotonic() + timeout
        pending = set(self.ports.values())
        while pending and time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            for port in list(pending):
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                    pending.discard(port)
            if pending:
                time.sleep(0.02)  # polling for readiness, not a timing assumption
        if pending:
            self.stop()
            raise RuntimeError(f"Dovecot did not listen on {sorted(pending)} within {timeout}s; "
                               f"log:\n{self.read_log()}")
        return True

    def read_log(self) -> str:
        text = ""
        for name in ("dovecot.log", "stderr.log"):
            with contextlib.suppress(OSError), open(os.path.join(self.root, name), errors="replace") as f:
                text += f.read()
        return text

    def _reap(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
            self.proc = None

    def stop(self, graceful: bool = False) -> None:
        """Stop the master by PID. Not graceful by default: Dovecot's clean shutdown takes a second,
        and the test's data is thrown away anyway. The master's process group is ours alone."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if graceful and proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(15)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(15)

    def crash(self) -> None:
        """Kill the master and every child at once (a server that dies mid-session)."""
        self.stop(graceful=False)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    @classmethod
    @contextlib.contextmanager
    def running(cls, users: dict[str, str] | None = None, **kwargs):
        dc = cls(users, **kwargs)
        try:
            dc.start()
            yield dc
        finally:
            dc.cleanup()

    def port(self, name: str) -> int:
        return self.ports[name]

    # -- mail -----------------------------------------------------------------
    def maildir(self, user: str, folder: str = "INBOX") -> str:
        """The Maildir of `folder` (Maildir++: INBOX is the root, others are .Name), created if needed."""
        root = os.path.join(self.home(user), "Maildir")
        path = root if folder.upper() == "INBOX" else os.path.join(root, "." + folder.replace("/", "."))
        for d in (self.home(user), root, path, *(os.path.join(path, s) for s in ("new", "cur", "tmp"))):
            if not os.path.isdir(d):
                os.mkdir(d, 0o700)
                os.chown(d, self.mail_uid, self.mail_gid)
        if folder.upper() != "INBOX":
            marker = os.path.join(path, "maildirfolder")
            if not os.path.exists(marker):
                open(marker, "w").close()
                os.chown(marker, self.mail_uid, self.mail_gid)
        return path

    _seq = 0

    def append(self, user: str, raw: bytes, folder: str = "INBOX", flags: str = "") -> str:
        """Put one message into the user's Maildir directly (Dovecot picks it up at its next sync)."""
        md = self.maildir(user, folder)
        Dovecot._seq += 1
        name = f"{int(time.time())}.M{Dovecot._seq}P{os.getpid()}.test"
        tmp = os.path.join(md, "tmp", name)
        with open(tmp, "wb") as f:
            f.write(raw)
        os.chown(tmp, self.mail_uid, self.mail_gid)
        dest = os.path.join(md, "cur", f"{name}:2,{flags}") if flags else os.path.join(md, "new", name)
        os.rename(tmp, dest)
        return dest

    def load_maildir(self, user: str, src: str) -> str:
        """Copy a whole Maildir++ tree (file names and mtimes kept) to be the user's Maildir; its root."""
        root = os.path.join(self.home(user), "Maildir")
        shutil.copytree(src, root, dirs_exist_ok=True)
        if os.geteuid() == 0:   # Dovecot's mail processes run as mail_uid
            for dirpath, _dirs, files in os.walk(root):
                os.chown(dirpath, self.mail_uid, self.mail_gid)
                for n in files:
                    os.chown(os.path.join(dirpath, n), self.mail_uid, self.mail_gid)
        return root

    def append_many(self, user: str, raws, folder: str = "INBOX") -> None:
        for raw in raws:
            self.append(user, raw, folder)

    def doveadm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        exe = shutil.which("doveadm") or "/usr/bin/doveadm"
        return subprocess.run([exe, "-c", self.conf, *args], capture_output=True, text=True,
                              timeout=60, check=check)

    @property
    def outage_flag(self) -> str:
        """While this file exists (auth_outage = True), logins fail with [UNAVAILABLE]."""
        return os.path.join(self.root, "auth-outage")

    def connections(self, user: str | None = None) -> int:
        """How many IMAP/POP3 sessions are logged in right now (for `user`, or everyone): `doveadm who`."""
        out = self.doveadm("who", "-1").stdout.splitlines()
        rows = [line.split() for line in out[1:] if line.strip()]
        return sum(1 for r in rows if user is None or r[0] == user)

    def set_uidvalidity(self, user: str, value: int, folder: str = "INBOX") -> None:
        self.doveadm("mailbox", "update", "-u", user, "--uid-validity", str(value), folder)

    def imap(self, user: str):
        """A logged-in imapclient.IMAPClient over the plain listener (for inspecting the server)."""
        import imapclient

        c = imapclient.IMAPClient("127.0.0.1", port=self.ports["imap"], ssl=False, timeout=30)
        c.login(user, self.users[user])
        return c

    def contents(self, user: str, folder: str = "INBOX") -> dict[int, tuple[tuple[bytes, ...], bytes]]:
        """{uid: (flags, raw bytes)} of a folder as the server reports it, \\Deleted ones included."""
        c = self.imap(user)
        try:
            if folder.upper() != "INBOX" and not c.folder_exists(folder):
                return {}
            c.select_folder(folder, readonly=True)
            uids = c.search("ALL")
            if not uids:
                return {}
            data = c.fetch(uids, ["FLAGS", "BODY.PEEK[]"])
            return {uid: (tuple(d[b"FLAGS"]), d[b"BODY[]"]) for uid, d in data.items()}
        finally:
            with contextlib.suppress(Exception):
                c.logout()
