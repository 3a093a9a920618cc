"""run_program / filter_program with real /bin/sh programs."""

import os
import time

import pytest

from fetchdeliver.delivery.pipe import filter_program, run_program
from fetchdeliver.errors import PermanentDeliveryError, TemporaryDeliveryError

ENV = {"SENDER": "from@example.org", "RECIPIENT": "to@example.org",
       "ORIGINAL_RECIPIENT": "orig@example.org"}
RAW = b"Subject: pipe\r\n\r\nbody\x00with NUL\nand \xff 8-bit\nno final newline"


def sh(script: str) -> list[str]:
    return ["/bin/sh", "-c", script, "prog"]


def test_message_on_stdin_and_envelope_in_environment(tmp_path):
    out = tmp_path / "out"
    envf = tmp_path / "env"
    r = run_program(sh(f'cat > "{out}"; printf "%s|%s|%s" "$SENDER" "$RECIPIENT" '
                       f'"$ORIGINAL_RECIPIENT" > "{envf}"'), RAW, env=ENV)
    assert r.target == "pipe"
    assert out.read_bytes() == RAW
    assert envf.read_text() == "from@example.org|to@example.org|orig@example.org"


def test_environment_keeps_path_and_adds_ours(tmp_path):
    out = tmp_path / "out"
    run_program(sh(f'echo "$PATH" > "{out}"'), b"", env={"SENDER": ""})
    assert out.read_text().strip() == os.environ["PATH"]


@pytest.mark.parametrize("code", [75, 71, 73, 74])
def test_temporary_exit_codes(code):
    with pytest.raises(TemporaryDeliveryError) as e:
        run_program(sh(f"cat >/dev/null; echo first >&2; echo 'disk is full' >&2; exit {code}"),
                    RAW, env=ENV)
    msg = str(e.value)
    assert "/bin/sh" in msg and f"exit code {code}" in msg and msg.endswith("disk is full")


@pytest.mark.parametrize("code", [1, 2, 64, 67, 69, 77, 78, 100])
def test_permanent_exit_codes(code):
    with pytest.raises(PermanentDeliveryError) as e:
        run_program(sh(f"echo 'no such user' >&2; exit {code}"), RAW, env=ENV)
    assert f"exit code {code}" in str(e.value) and "no such user" in str(e.value)


def test_death_by_signal_is_temporary():
    with pytest.raises(TemporaryDeliveryError, match="killed by SIGTERM"):
        run_program(sh("kill -TERM $$"), RAW, env=ENV)
    with pytest.raises(TemporaryDeliveryError, match="SIGKILL"):
        run_program(sh("echo dying >&2; kill -KILL $$"), RAW, env=ENV)


def test_timeout_kills_the_program_and_its_children(tmp_path):
    pidfile = tmp_path / "pid"
    with pytest.raises(TemporaryDeliveryError, match="timeout"):
        run_program(sh(f'sleep 300 & echo $! > "{pidfile}"; wait'), b"x", env=ENV, timeout=1)
    child = int(pidfile.read_text())
    # SIGKILL went to the whole process group: the background sleep is gone (or a zombie
    # waiting for init) within a bounded wait.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{child}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            break
        if state in ("Z", "X"):
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"child {child} of the timed-out program is still running")


def test_missing_and_unexecutable_programs_are_permanent(tmp_path):
    with pytest.raises(PermanentDeliveryError, match="not found"):
        run_program([str(tmp_path / "nope")], RAW, env=ENV)
    script = tmp_path / "noexec"
    script.write_text("#!/bin/sh\nexit 0\n")
    os.chmod(script, 0o644)  # no x bit: refused even for root
    with pytest.raises(PermanentDeliveryError, match="cannot run"):
        run_program([str(script)], RAW, env=ENV)
    with pytest.raises(PermanentDeliveryError):
        run_program([], RAW, env=ENV)


def test_program_that_ignores_stdin_may_still_succeed():
    run_program(["/bin/true"], b"x" * (1024 * 1024), env=ENV)


def test_filter_returns_stdout_byte_exact():
    assert filter_program(sh("cat"), RAW, env=ENV) == RAW
    assert filter_program(sh("tr a-z A-Z"), b"Subject: x\n", env=ENV) == b"SUBJECT: X\n"
    assert filter_program(sh('printf "X-Sender: %s\\n"  "$SENDER"; cat'), b"b\n", env=ENV) == \
        b"X-Sender: from@example.org\nb\n"


def test_filter_with_large_input_and_output_does_not_deadlock():
    big = b"line\n" * 600_000  # 3 MB in and out: both pipes fill up
    assert filter_program(sh("cat"), big, env=ENV) == big


def test_filter_failure_is_classified_like_pipe():
    with pytest.raises(TemporaryDeliveryError, match="exit code 75"):
        filter_program(sh("exit 75"), b"x", env=ENV)
    with pytest.raises(PermanentDeliveryError, match="exit code 1: bad"):
        filter_program(sh("echo bad >&2; exit 1"), b"x", env=ENV)
