"""Real spam and virus scanners for the [filter] tests: SpamAssassin's spamd, ClamAV's clamd and
rspamd, each started here on 127.0.0.1 (ephemeral port) or a Unix socket in a temp dir, offline,
and stopped by PID.

- spamd: a tiny rules dir of our own (-C): the Check plugin and the GTUBE body rule, so the run does
  not depend on sa-update or the network (-L: local tests only).
- clamd: no signature DB ships offline; we write a one-line .ndb matching the EICAR test string.
- rspamd: a minimal config with just a normal worker; GTUBE is built into rspamd's core.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from smtp_sinks import free_port  # noqa: F401 (the tests import it from here too)

GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
EICAR_SIGNATURE = "Eicar-Test-Signature"


class ScannerUnavailable(Exception):
    """The scanner's program is not installed or would not start (the message says which and why)."""


def _wait(cond, deadline: float, proc: subprocess.Popen, what: str, log: str) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if cond():
            return
        if proc.poll() is not None:
            raise ScannerUnavailable(f"{what} exited with {proc.returncode}: {_tail(log)}")
        time.sleep(0.05)
    raise ScannerUnavailable(f"{what} did not start within {deadline:.0f}s: {_tail(log)}")


def _tail(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read()[-1500:].decode("utf-8", "replace")
    except OSError:
        return ""


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class _Daemon:
    proc: subprocess.Popen | None = None
    pidfile: str | None = None

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix=f"fd-{type(self).__name__.lower()}-")
        os.chmod(self.dir, 0o755)  # spamd/rspamd children run as nobody and read their config here

    def stop(self) -> None:
        pids = []
        if self.pidfile:
            try:
                pids.append(int(open(self.pidfile).read().split()[0]))
            except (OSError, ValueError, IndexError):
                pass
        if self.proc is not None:
            pids.append(self.proc.pid)
        for pid in dict.fromkeys(pids):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        if self.proc is not None:
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


class Spamd(_Daemon):
    """spamd on 127.0.0.1:PORT (`.address`, "127.0.0.1:PORT") and on a Unix socket (`.socket`)."""

    def __init__(self) -> None:
        exe = shutil.which("spamd") or ("/usr/sbin/spamd" if os.path.exists("/usr/sbin/spamd") else None)
        if exe is None:
            raise ScannerUnavailable("spamd is not installed (apt: spamd)")
        super().__init__()
        rules = os.path.join(self.dir, "rules")
        site = os.path.join(self.dir, "site")
        home = os.path.join(self.dir, "home")
        for d in (rules, site, home):
            os.mkdir(d)
            os.chmod(d, 0o777 if d == home else 0o755)
        with open(os.path.join(rules, "v320.pre"), "w") as f:
            f.write("loadplugin Mail::SpamAssassin::Plugin::Check\n")
        with open(os.path.join(rules, "10_gtube.cf"), "w") as f:
            f.write("required_score 5.0\n"
                    "body GTUBE /XJS\\*C4JDBQADN1\\.NSBN3\\*2IDNEN\\*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL\\*C\\.34X/\n"
                    "describe GTUBE Generic Test for Unsolicited Bulk Email\n"
                    "score GTUBE 1000.0\n"
                    # What Debian's 10_default_prefs.cf says, for spamc's PROCESS (the benchmark's peer)
                    "report_safe 0\nclear_headers\nadd_header spam Flag _YESNOCAPS_\n"
                    "add_header all Status _YESNO_, score=_SCORE_ required=_REQD_ tests=_TESTS_\n")
        for path in (os.path.join(rules, "v320.pre"), os.path.join(rules, "10_gtube.cf")):
            os.chmod(path, 0o644)
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.pidfile = os.path.join(self.dir, "spamd.pid")
        self.socket = os.path.join(self.dir, "spamd.sock")
        log = os.path.join(self.dir, "spamd.log")
        cmd = [exe, "-i", self.address, "-i", self.socket, "-A", "127.0.0.1", "-C", rules, f"--siteconfigpath={site}", "-L",
               "-x", "-H", home, "-m", "1", "--min-children=1", "--max-spare=1", "-r", self.pidfile,
               "-s", "stderr"]
        if os.geteuid() == 0:
            cmd += ["-u", "nobody"]  # spamd will not run its children as root
        self.proc = subprocess.Popen(cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            _wait(lambda: _listening(self.port) and os.path.exists(self.socket), 60, self.proc, "spamd", log)
        except BaseException:
            self.stop()
            raise


class Clamd(_Daemon):
    """clamd on a Unix socket (`.socket`) and on 127.0.0.1:PORT (`.address`), with an EICAR signature."""

    def __init__(self) -> None:
        exe = shutil.which("clamd") or ("/usr/sbin/clamd" if os.path.exists("/usr/sbin/clamd") else None)
        if exe is None:
            raise ScannerUnavailable("clamd is not installed (apt: clamav-daemon)")
        super().__init__()
        db = os.path.join(self.dir, "db")
        os.mkdir(db)
        with open(os.path.join(db, "test.ndb"), "w") as f:
            # NAME:TARGET(0 = any file):OFFSET(* = anywhere):HEX
            f.write(f"{EICAR_SIGNATURE}:0:*:{EICAR.hex()}\n")
        self.socket = os.path.join(self.dir, "clamd.sock")
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.pidfile = os.path.join(self.dir, "clamd.pid")
        log = os.path.join(self.dir, "clamd.log")
        conf = os.path.join(self.dir, "clamd.conf")
        with open(conf, "w") as f:
            f.write(f"Foreground yes\nLocalSocket {self.socket}\nTCPSocket {self.port}\nTCPAddr 127.0.0.1\n"
                    f"DatabaseDirectory {db}\nLogFile {log}\nPidFile {self.pidfile}\n"
                    f"StreamMaxLength 25M\nSelfCheck 0\n")
            if os.geteuid() == 0:
                f.write("User root\n")  # stay the user that owns the temp dir (clamd drops to User)
        self.proc = subprocess.Popen([exe, "-c", conf], stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(self.dir, "stderr"), "wb"),
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            _wait(lambda: os.path.exists(self.socket) and _listening(self.port), 120, self.proc, "clamd", log)
        except BaseException:
            self.stop()
            raise


class Rspamd(_Daemon):
    """rspamd's normal worker on 127.0.0.1:PORT; `.url` is "http://127.0.0.1:PORT"."""

    def __init__(self) -> None:
        exe = shutil.which("rspamd")
        if exe is None:
            raise ScannerUnavailable("rspamd is not installed (apt: rspamd)")
        super().__init__()
        os.chmod(self.dir, 0o777)  # its workers run as nobody and write their db here
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        db = os.path.join(self.dir, "db")
        os.mkdir(db)
        os.chmod(db, 0o777)
        conf = os.path.join(self.dir, "rspamd.conf")
        with open(conf, "w") as f:
            f.write(f'options {{ pidfile = "{self.dir}/rspamd.pid"; dbdir = "{db}"; tempdir = "{self.dir}";\n'
                    f'  filters = ""; dns {{ nameserver = ["127.0.0.1:1"]; }} }}\n'
                    'logging { type = "console"; level = "error"; }\n'
                    'actions { reject = 15; add_header = 6; greylist = 4; }\n'
                    f'worker "normal" {{ bind_socket = "127.0.0.1:{self.port}"; count = 1; }}\n')
        log = os.path.join(self.dir, "rspamd.log")
        cmd = [exe, "-f", "-c", conf]
        if os.geteuid() == 0:
            cmd += ["-u", "nobody", "-g", "nogroup"]
        self.proc = subprocess.Popen(cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            _wait(lambda: _listening(self.port), 60, self.proc, "rspamd", log)
        except BaseException:
            self.stop()
            raise


class Silent:
    """A 127.0.0.1 port that accepts connections and never answers: a hung scanner."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.sock.close()
