#!/usr/bin/env python3
"""ManageSieve benchmark: `fetchdeliver managesieve` next to Pigeonhole's managesieved (issue #13).

Both servers run on 127.0.0.1 in this run: Dovecot with managesieve (its own config in a temporary
directory, see tests/integration/managesieve_support.py) and `fetchdeliver managesieve` (a separate
process) with a passwd-file whose home is a temporary directory. The same raw client times, against each
server in turn (they alternate, so noise hits both alike):

    connect + AUTHENTICATE PLAIN + LOGOUT               (--logins times)
    PUTSCRIPT of a 40-rule script (about 3 KB)          (--count times over one connection; each
                                                          compiled and stored durably by both)
    SETACTIVE, alternating between two scripts          (--count times; both compile the script again or
                                                          use their compiled copy: Pigeonhole's .svbin,
                                                          our compile cache filled by PUTSCRIPT)
    GETSCRIPT + LISTSCRIPTS                             (--count times)

Every answer must be OK, or the run stops and says which. Figures are the median of --repeat runs after
one untimed warm-up. Run as root (Dovecot's mail processes run as nobody):

    /work/main/.venv/bin/python benchmarks/managesieve_server.py [--count 200] [--logins 100] [--repeat 3]
"""

from __future__ import annotations

import argparse
import base64
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "integration"))


def make_script(n_rules: int, variant: int) -> bytes:
    lines = ['require ["fileinto", "envelope", "imap4flags", "variables"];']
    for i in range(n_rules):
        lines.append(f'if header :contains "list-id" "list{i}-{variant}.example.org" {{\n'
                     f'  addflag "$Label{i % 5}";\n  fileinto "Lists/list{i}";\n  stop;\n}}')
    lines.append('if envelope :domain :is "from" "example.com" { fileinto "Work"; }')
    return ("\n".join(lines) + "\n").encode()


def literal(data: bytes) -> bytes:
    return b"{%d+}\r\n" % len(data) + data


def expect_ok(client, cmd: bytes, what: str):
    r = client.cmd(cmd)
    if r.kind != "OK":
        raise SystemExit(f"{what}: {cmd[:60]!r} got {r!r}")
    return r


def run_logins(port: int, n: int, user: str, password: str) -> float:
    from managesieve_support import SieveClient

    token = base64.b64encode(f"\0{user}\0{password}".encode())
    t0 = time.perf_counter()
    for _ in range(n):
        c = SieveClient(port)
        expect_ok(c, b'AUTHENTICATE "PLAIN" "' + token + b'"', "login")
        expect_ok(c, b"LOGOUT", "logout")
        c.close()
    return time.perf_counter() - t0


def run_commands(port: int, n: int, user: str, password: str, scripts: list[bytes]) -> dict[str, float]:
    from managesieve_support import SieveClient

    c = SieveClient(port)
    expect_ok(c, b'AUTHENTICATE "PLAIN" "' + base64.b64encode(f"\0{user}\0{password}".encode()) + b'"', "login")
    times = {}
    t0 = time.perf_counter()
    for i in range(n):
        # A new text every time (as a user editing a rule): no compile cache helps either server.
        text = scripts[i % len(scripts)] + b"# edit %d %d\n" % (i, time.monotonic_ns())
        expect_ok(c, b'PUTSCRIPT "s%d" ' % (i % 2) + literal(text), "put")
    times["PUTSCRIPT"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(n):
        expect_ok(c, b'SETACTIVE "s%d"' % (i % 2), "setactive")
    times["SETACTIVE"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(n):
        expect_ok(c, b'GETSCRIPT "s%d"' % (i % 2), "get")
        expect_ok(c, b"LISTSCRIPTS", "list")
    times["GETSCRIPT+LISTSCRIPTS"] = time.perf_counter() - t0
    expect_ok(c, b"LOGOUT", "logout")
    c.close()
    return times


def start_ours(tmp: str, user: str, password: str) -> tuple[subprocess.Popen, int]:
    home = os.path.join(tmp, "home", user)
    os.makedirs(home)
    passwd = os.path.join(tmp, "passwd")
    with open(passwd, "w") as f:
        f.write(f"{user}:{{PLAIN}}{password}::::{home}::\n")
    conf = os.path.join(tmp, "config.toml")
    with open(conf, "w") as f:
        f.write(f'[managesieve]\npasswd_file = "{passwd}"\nmax_scripts = 0\nmax_script_size = 0\n')
    env = dict(os.environ, PYTHONPATH=str(REPO), XDG_CACHE_HOME=os.path.join(tmp, "cache"))
    exe = os.path.join(os.path.dirname(sys.executable), "fetchdeliver")
    cmd = [exe] if os.path.exists(exe) else [sys.executable, "-m", "fetchdeliver"]
    proc = subprocess.Popen([*cmd, "managesieve", "-c", conf, "--listen", "127.0.0.1:0"], stderr=subprocess.PIPE,
                            text=True, env=env)
    line = proc.stderr.readline()
    if "listening on" not in line:
        raise SystemExit(f"fetchdeliver managesieve did not start: {line}{proc.stderr.read()}")
    return proc, int(line.rsplit(":", 1)[1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--logins", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    from dovecot import DovecotUnavailable
    from managesieve_support import SieveDovecot

    user, password = "alice", "secret"
    scripts = [make_script(40, v) for v in range(2)]
    try:
        dc = SieveDovecot({user: password}, max_scripts=0, max_script_size="0")
    except DovecotUnavailable as e:
        print(f"skipped: {e}", file=sys.stderr)
        return 2
    tmp = tempfile.mkdtemp(prefix="fd-bench-managesieve-")
    proc = None
    try:
        dc.start()
        proc, our_port = start_ours(tmp, user, password)
        ports = {"fetchdeliver": our_port, "Pigeonhole": dc.port("sieve")}
        results: dict[str, dict[str, list[float]]] = {name: {} for name in ports}
        for rnd in range(args.repeat + 1):
            for name, port in (ports.items() if rnd % 2 == 0 else reversed(list(ports.items()))):
                row = {"login+logout": run_logins(port, args.logins, user, password)}
                row.update(run_commands(port, args.count, user, password, scripts))
                if rnd == 0:
                    continue   # warm-up
                for k, v in row.items():
                    results[name].setdefault(k, []).append(v)
        print(f"script size {len(scripts[0])} bytes; {args.count} commands per row "
              f"({args.logins} for logins); median of {args.repeat}")
        print(f"{'operation':<24}{'fetchdeliver':>14}{'Pigeonhole':>14}{'ratio':>8}")
        for k in results["fetchdeliver"]:
            ours = statistics.median(results["fetchdeliver"][k])
            theirs = statistics.median(results["Pigeonhole"][k])
            n = args.logins if k == "login+logout" else args.count
            print(f"{k:<24}{ours / n * 1000:>11.2f} ms{theirs / n * 1000:>11.2f} ms{ours / theirs:>7.2f}x")
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        dc.cleanup()
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
