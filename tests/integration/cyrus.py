"""A real Cyrus IMAP 3.x (Debian's cyrus-imapd + cyrus-caldav) with JMAP, started for a test.

Everything lives in one temporary directory: imapd.conf, cyrus.conf, the config directory,
the spool, the sasldb with the users' passwords, and the sockets. Services on 127.0.0.1 with
ephemeral ports: imapd (mail is put in with APPEND) and httpd (`httpmodules: jmap`; JMAP needs
`conversations: yes`).
The master runs in the foreground (`master -D`) as the `cyrus` user when we are root (it refuses
to run services as root), else as ourselves; it is stopped by its PID.

Every service gets `-C imapd.conf` on its command line: Cyrus' master does not pass its own -C on,
and a service without it reads the system's /etc/imapd.conf.

Debian's httpd is built without Wslay: its JMAP EventSource answers 204 No Content (push is only
enabled with WebSockets), so push is tested through jmap_eventsource.py.

    with Cyrus.running(users={"alice": "secret"}) as cy:
        cy.append("alice", b"Subject: hi\\r\\n\\r\\nbody\\r\\n")
        cy.session_url, cy.port("http")
"""

from __future__ import annotations

import contextlib
import imaplib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

from dovecot import free_ports

MASTER = "/usr/lib/cyrus/bin/master"
HTTPD = "/usr/lib/cyrus/bin/httpd"
# Debian's cyrus-imapd conflicts with dovecot-imapd: .ci/run unpacks it here instead of installing it.
UNPACKED = "/usr/local/lib/fetchdeliver/cyrus-imapd/usr/lib/cyrus/bin"


def cyrus_bin(name: str) -> str:
    """imapd and idled: installed (cyrus-imapd) or unpacked by .ci/run."""
    installed = os.path.join("/usr/lib/cyrus/bin", name)
    return installed if os.path.exists(installed) else os.path.join(UNPACKED, name)
ADMIN = "cyradmin"


class CyrusUnavailable(Exception):
    """Cyrus (or its httpd) is not installed: tests should skip."""


def find_cyrus() -> None:
    for exe, pkg in ((MASTER, "cyrus-common"), (HTTPD, "cyrus-caldav"), (cyrus_bin("imapd"), "cyrus-imapd")):
        if not os.path.exists(exe):
            raise CyrusUnavailable(f"{exe} is missing (.ci/run installs cyrus-common cyrus-caldav sasl2-bin "
                                   "and unpacks cyrus-imapd into /usr/local/lib/fetchdeliver)"
                                   f" [{pkg}]")
    if shutil.which("saslpasswd2") is None:
        raise CyrusUnavailable("saslpasswd2 is missing (apt-get install sasl2-bin)")


class Cyrus:
    """One Cyrus instance. Use `Cyrus.running(...)` or start()/stop() in a finally."""

    def __init__(self, users: dict[str, str] | None = None) -> None:
        find_cyrus()
        self.users = dict(users or {})
        self.dir = tempfile.mkdtemp(prefix="fd-cyrus-")
        os.chmod(self.dir, 0o755)
        self.ports = dict(zip(("imap", "http", "https"), free_ports(3)))
        import hashlib
        import ssl

        import trustme  # test dependency, as for the Dovecot fixture

        # httpd on "https" speaks implicit TLS with a certificate from a test CA.
        self.ca = trustme.CA()
        cert = self.ca.issue_cert("127.0.0.1", "localhost", common_name="127.0.0.1")
        self.ca_file = self.path("ca.pem")
        self.ca.cert_pem.write_to_path(self.ca_file)
        self.cert_file = self.path("server.pem")
        cert.private_key_and_cert_chain_pem.write_to_path(self.cert_file)
        os.chmod(self.cert_file, 0o600)
        der = ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())
        self.fingerprint = hashlib.sha256(der).hexdigest()
        self.proc: subprocess.Popen | None = None
        if os.getuid() == 0:
            self.run_as = "cyrus"
        else:
            self.run_as = pwd.getpwuid(os.getuid()).pw_name
        self.admin_password = "admin-" + os.urandom(6).hex()

    # -- configuration ------------------------------------------------------------------
    def path(self, *parts: str) -> str:
        return os.path.join(self.dir, *parts)

    @property
    def conf(self) -> str:
        return self.path("imapd.conf")

    def _write_config(self) -> None:
        d = self.dir
        for sub in ("conf", "spool", "sieve", "socket", "run"):
            os.makedirs(self.path(sub), exist_ok=True)
        with open(self.conf, "w") as f:
            f.write(f"""configdirectory: {d}/conf
defaultpartition: default
partition-default: {d}/spool
sievedir: {d}/sieve
servername: localhost
admins: {ADMIN}
cyrus_user: {self.run_as}
allowplaintext: yes
sasl_pwcheck_method: auxprop
sasl_auxprop_plugin: sasldb
sasl_sasldb_path: {d}/sasldb2
sasl_mech_list: PLAIN LOGIN
httpmodules: jmap
httpallowcompress: no
conversations: yes
conversations_db: twoskip
unixhierarchysep: yes
altnamespace: yes
virtdomains: off
lmtpsocket: {d}/socket/lmtp
idlesocket: {d}/socket/idle
notifysocket: {d}/socket/notify
jmap_pushpoll: 1s
tls_server_cert: {self.cert_file}
tls_server_key: {self.cert_file}
syslog_prefix: fd-cyrus-test
""")
        c = f"-C {self.conf}"
        with open(self.path("cyrus.conf"), "w") as f:
            f.write(f"""START {{
  recover cmd="ctl_cyrusdb {c} -r"
}}
SERVICES {{
  imap cmd="{cyrus_bin('imapd')} {c}" listen="127.0.0.1:{self.ports['imap']}" prefork=0
  http cmd="httpd {c}" listen="127.0.0.1:{self.ports['http']}" prefork=0
  https cmd="httpd -s {c}" listen="127.0.0.1:{self.ports['https']}" prefork=0
}}
EVENTS {{
}}
DAEMON {{
  idled cmd="{cyrus_bin('idled')} {c}"
}}
""")
        for user, password in {ADMIN: self.admin_password, **self.users}.items():
            self._saslpasswd(user, password)
        if os.getuid() == 0:
            subprocess.run(["chown", "-R", f"{self.run_as}:", self.dir], check=True)

    def _saslpasswd(self, user: str, password: str) -> None:
        # The realm Cyrus looks users up in is its servername ("localhost" here).
        subprocess.run(["saslpasswd2", "-p", "-c", "-f", self.path("sasldb2"), "-u", "localhost", user],
                       input=password.encode(), check=True, capture_output=True)

    # -- life cycle -----------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> "Cyrus":
        self._write_config()
        cmd = [MASTER, "-C", self.conf, "-M", self.path("cyrus.conf"), "-p", self.path("run", "master.pid"), "-D"]
        if os.getuid() == 0:
            # setpriv execs: the PID we hold is the master's own.
            cmd = ["setpriv", f"--reuid={self.run_as}", "--regid=mail", "--init-groups", "--"] + cmd
        self._log = open(self.path("master.log"), "wb")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True, cwd=self.dir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"cyrus master exited with {self.proc.returncode}: {self.read_log()}")
            if self._ready():
                for user in self.users:
                    self.create_user(user)
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"cyrus did not become ready within {timeout}s: {self.read_log()}")

    def _ready(self) -> bool:
        for name in ("imap", "http"):
            try:
                with socket.create_connection(("127.0.0.1", self.ports[name]), timeout=1):
                    pass
            except OSError:
                return False
        return True

    def read_log(self) -> str:
        try:
            with open(self.path("master.log"), "rb") as f:
                return f.read().decode("utf-8", "replace")[-2000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)   # the master stops its services
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        # Services the master started are in its session: none may outlive it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc = None
        self._log.close()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    @classmethod
    @contextlib.contextmanager
    def running(cls, users: dict[str, str] | None = None):
        cy = cls(users)
        try:
            yield cy.start()
        finally:
            cy.cleanup()

    # -- helpers ------------------------------------------------------------------------
    def port(self, name: str) -> int:
        return self.ports[name]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['http']}"

    @property
    def session_url(self) -> str:
        return self.base_url + "/jmap"

    def imap(self, user: str, password: str | None = None) -> imaplib.IMAP4:
        m = imaplib.IMAP4("127.0.0.1", self.ports["imap"])
        m.login(user, password if password is not None else self.users.get(user, self.admin_password))
        return m

    def add_user(self, user: str, password: str) -> None:
        """A new user (password in the sasldb) with its mailbox, on the running server."""
        self.users[user] = password
        self._saslpasswd(user, password)
        self.create_user(user)

    def create_user(self, user: str) -> None:
        m = self.imap(ADMIN, self.admin_password)
        try:
            typ, data = m.create(f"user/{user}")
            if typ != "OK":
                raise RuntimeError(f"CREATE user/{user}: {data}")
        finally:
            m.logout()

    def append(self, user: str, raw: bytes, folder: str = "INBOX", flags: str = "") -> None:
        m = self.imap(user)
        try:
            if folder != "INBOX":
                m.create(folder)
            typ, data = m.append(folder, flags or None, None, raw)
            if typ != "OK":
                raise RuntimeError(f"APPEND {folder}: {data}")
        finally:
            m.logout()

    def append_many(self, user: str, raws, folder: str = "INBOX") -> None:
        """APPEND every message over one connection."""
        m = self.imap(user)
        try:
            for raw in raws:
                typ, data = m.append(folder, None, None, raw)
                if typ != "OK":
                    raise RuntimeError(f"APPEND {folder}: {data}")
        finally:
            m.logout()

    def messages(self, user: str, folder: str = "INBOX") -> dict[int, tuple[bytes, bytes]]:
        """UID -> (FLAGS, bytes) of a folder, read over IMAP."""
        m = self.imap(user)
        try:
            m.select(folder, readonly=True)
            typ, data = m.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[])")
            out: dict[int, tuple[bytes, bytes]] = {}
            for item in data:
                if isinstance(item, tuple):
                    head = item[0]
                    uid = int(head.split(b"UID ")[1].split()[0].rstrip(b")"))
                    flags = head.split(b"FLAGS (")[1].split(b")")[0] if b"FLAGS (" in head else b""
                    out[uid] = (flags, item[1])
            return out
        finally:
            m.logout()

    def jmap(self, user: str, calls: list, password: str | None = None) -> list:
        """Raw JMAP method calls (for checks from the test side): their [name, args, id] responses."""
        import base64
        import json

        auth = base64.b64encode(f"{user}:{password or self.users[user]}".encode()).decode()
        body = json.dumps({"using": ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"],
                           "methodCalls": [[n, {"accountId": user, **a}, str(i)]
                                           for i, (n, a) in enumerate(calls)]}).encode()
        req = urllib.request.Request(self.base_url + "/jmap/", data=body,
                                     headers={"Authorization": "Basic " + auth,
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())["methodResponses"]
