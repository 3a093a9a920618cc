"""Dovecot's IMAP compliance tester (imaptest, release-2.3) against our server, group by group.

imaptest is built once with ../shared/conformance/build-imaptest.sh into a cache outside the repo
($FETCHDELIVER_IMAPTEST_DIR, else ~/.cache/fetchdeliver/imaptest); the conformance directory is
$FETCHDELIVER_CONFORMANCE, else `shared/conformance` beside the main checkout (worktrees included).

Each scripted group runs on its own (`test=DIR/GROUP`), so each has its own command counts:
imaptest counts a group whose capability we do not advertise as passed while running no command,
so such a group is "not run" here, never "passed". A group passes when it ran commands, none failed,
and imaptest printed none of its own "Error:" state-check lines.

tests/integration/imaptest_passing.txt lists the groups passing today; the test fails when one of
them stops passing (add a group there when it starts to pass; never remove one to make this pass).
"""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from imap_helpers import make_server

HERE = os.path.dirname(os.path.abspath(__file__))
PASSING_FILE = os.path.join(HERE, "imaptest_passing.txt")


def conformance_dir() -> str | None:
    env = os.environ.get("FETCHDELIVER_CONFORMANCE")
    if env:
        return env if os.path.isdir(env) else None
    repo = os.path.dirname(os.path.dirname(HERE))
    candidates = [os.path.join(os.path.dirname(repo), "shared", "conformance")]
    try:   # in a git worktree: beside the main checkout
        common = subprocess.run(["git", "-C", repo, "rev-parse", "--path-format=absolute", "--git-common-dir"],
                                capture_output=True, text=True, timeout=30).stdout.strip()
        if common:
            candidates.append(os.path.join(os.path.dirname(os.path.dirname(common)), "shared", "conformance"))
    except (OSError, subprocess.SubprocessError):
        pass
    for c in candidates:
        if os.path.isfile(os.path.join(c, "build-imaptest.sh")):
            return c
    return None


def imaptest_prefix() -> str:
    env = os.environ.get("FETCHDELIVER_IMAPTEST_DIR")
    if env:
        return env
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "fetchdeliver", "imaptest")


@pytest.fixture(scope="module")
def imaptest():
    """(binary, tests directory): built on first use, skipped with the build's own reason if it cannot be."""
    prefix = imaptest_prefix()
    binary, tests = os.path.join(prefix, "bin", "imaptest"), os.path.join(prefix, "tests")
    if not (os.access(binary, os.X_OK) and os.path.isdir(tests)):
        conf = conformance_dir()
        if conf is None:
            pytest.skip("imaptest source not found: no ../shared/conformance beside the repository "
                        "(set FETCHDELIVER_CONFORMANCE)")
        proc = subprocess.run(["bash", os.path.join(conf, "build-imaptest.sh"), prefix],
                              capture_output=True, text=True, timeout=1200)
        if proc.returncode != 0:
            pytest.skip(f"imaptest could not be built: {proc.stderr.strip() or proc.stdout.strip()}")
    return binary, tests


def groups(tests_dir: str) -> list[str]:
    return sorted(n for n in os.listdir(tests_dir)
                  if not n.endswith(".mbox") and os.path.isfile(os.path.join(tests_dir, n)))


SUMMARY = re.compile(rb"base protocol: (\d+)/(\d+) individual commands failed\s*\n"
                     rb"extensions: (\d+)/(\d+) individual commands failed")


def run_group(binary: str, tests_dir: str, group: str, port: int) -> dict:
    proc = subprocess.run([binary, "host=127.0.0.1", f"port={port}", "user=alice", "pass=secret",
                           f"test={os.path.join(tests_dir, group)}"],
                          capture_output=True, timeout=120, cwd=tests_dir)
    out = proc.stdout + proc.stderr
    m = SUMMARY.search(out)
    assert m, f"imaptest printed no summary for {group} (exit {proc.returncode}):\n{out[-2000:].decode()}"
    base_failed, base_total, ext_failed, ext_total = map(int, m.groups())
    errors = [ln for ln in out.decode("utf-8", "replace").splitlines() if ln.startswith("Error:")]
    total, failed = base_total + ext_total, base_failed + ext_failed
    status = "not run" if total == 0 else ("passed" if failed == 0 and not errors else "failed")
    return {"group": group, "status": status, "commands": total, "failed": failed, "errors": errors,
            "output": out.decode("utf-8", "replace")}


def recorded_passing() -> set[str]:
    with open(PASSING_FILE) as f:
        return {ln.strip() for ln in f if ln.strip() and not ln.startswith("#")}


@pytest.mark.timeout(1500)
def test_imaptest_scripted_groups(imaptest, tmp_path):
    binary, tests_dir = imaptest
    server, _maildir, _passwd = make_server(tmp_path, n_plain=0)
    try:
        results = [run_group(binary, tests_dir, g, server.port()) for g in groups(tests_dir)]
    finally:
        server.stop()
    by_status: dict[str, list] = {"passed": [], "failed": [], "not run": []}
    for r in results:
        by_status[r["status"]].append(r)
    summary = (f"imaptest: {len(results)} groups: {len(by_status['passed'])} passed, "
               f"{len(by_status['failed'])} failed, {len(by_status['not run'])} not run (capability not "
               f"offered); {sum(r['failed'] for r in results)}/{sum(r['commands'] for r in results)} "
               f"commands failed, {sum(len(r['errors']) for r in results)} Error: lines")
    print(summary)
    for r in by_status["failed"]:
        print(f"  failed: {r['group']} ({r['failed']}/{r['commands']} commands, {len(r['errors'])} Error: lines)")
    print("  not run:", " ".join(r["group"] for r in by_status["not run"]))
    passing = {r["group"] for r in by_status["passed"]}
    lost = recorded_passing() - passing
    details = "\n\n".join(r["output"][-3000:] for r in results if r["group"] in lost)
    assert not lost, f"{summary}\nno longer passing: {sorted(lost)}\n{details}"
    # A group counted as passed ran commands: a sanity check on the parsing above.
    assert all(r["commands"] > 0 for r in by_status["passed"])
    assert passing, summary


def _stress_mbox(path: str, n: int = 200) -> None:
    """n messages, each with its own Message-ID (else imaptest reports "BODYSTRUCTURE changed")."""
    with open(path, "w") as f:
        for i in range(n):
            f.write(f"From sender{i}@example.org  Mon Dec  1 10:00:00 2025\n"
                    f"From: Sender {i} <sender{i}@example.org>\nTo: alice@example.com\n"
                    f"Subject: stress {i}\nMessage-ID: <stress.{i}@example.org>\n"
                    f"Date: Mon, 01 Dec 2025 10:00:00 +0000\n\n" + "body line\n" * (1 + i % 40) + "\n")


# Bugs the stress run meets now and then, each still open in issue 12: a keyword another session
# added reaches a session in FETCH FLAGS before a FLAGS update lists it (session.py; the scripted
# "store" group fails on it too). A run with only these is reported XFAIL; any other line fails.
KNOWN_STRESS_ERRORS = ("Keyword used without being in FLAGS",)


@pytest.mark.timeout(300)
def test_imaptest_stress_ten_clients(imaptest, tmp_path):
    """imaptest's random stress: 10 clients (LOGIN, LIST, SELECT, FETCH, STORE, EXPUNGE, APPEND ...)
    for FETCHDELIVER_IMAPTEST_SECS seconds (20; the issue's full run is 60) with no error."""
    binary, _tests = imaptest
    secs = int(os.environ.get("FETCHDELIVER_IMAPTEST_SECS", "20"))
    mbox = str(tmp_path / "stress.mbox")
    _stress_mbox(mbox)
    server, _maildir, _passwd = make_server(tmp_path, n_plain=0)
    try:
        proc = subprocess.run([binary, "host=127.0.0.1", f"port={server.port()}", "user=alice", "pass=secret",
                               f"mbox={mbox}", "clients=10", f"secs={secs}"],
                              capture_output=True, timeout=secs + 120, cwd=str(tmp_path))
    finally:
        server.stop()
    out = (proc.stdout + proc.stderr).decode("utf-8", "replace")
    errors = [ln for ln in out.splitlines() if ln.startswith(("Error:", "Fatal:", "Panic:"))]
    unknown = [ln for ln in errors if not any(k in ln for k in KNOWN_STRESS_ERRORS)]
    assert proc.returncode == 0 and not unknown, f"exit {proc.returncode}, {len(errors)} errors:\n" + \
        "\n".join(unknown[:30]) + "\n" + out[-2000:]
    # the totals line: commands of each kind were run (Logi List Stat Sele Fetc Fet2 Stor Dele Expu Appe Logo)
    assert "Totals:" in out, out[-2000:]
    lines = out.rsplit("Totals:", 1)[1].strip().splitlines()
    names = lines[0].split()
    # the first all-digit row under the names (percentages and any Error: lines follow or precede it)
    numbers = next((ln.split() for ln in lines[1:] if ln.split() and all(x.isdigit() for x in ln.split())
                    and len(ln.split()) == len(names)), [])
    counts = dict(zip(names, numbers))
    assert all(int(counts.get(k, 0)) > 0 for k in ("Logi", "Sele", "Fetc", "Stor", "Appe")), out[-2000:]
    print(f"imaptest stress, 10 clients, {secs} s: {counts}")
    if errors:
        # shown as XFAIL, never as a pass: remove the entry from KNOWN_STRESS_ERRORS once fixed
        pytest.xfail(f"{len(errors)} known-bug lines, e.g. {errors[0][:160]}")
