"""Crash safety: `fetchdeliver fetch` SIGKILLed at 20 random moments, then rerun to completion,
leaves every message delivered exactly once."""

import os
import random
import signal
import time

import pytest

from conftest import make_message
from fetchsetup import FetchSetup, counts, originals, split_received, lf

MESSAGES = 500
KILLS = 20


def message_id(raw: bytes) -> bytes:
    for line in raw.replace(b"\r\n", b"\n").split(b"\n"):
        if line.lower().startswith(b"message-id:"):
            return line.split(b":", 1)[1].strip()
    raise AssertionError(raw[:300])


@pytest.mark.parametrize("protocol,after", [("imap", "delete"), ("imap", "keep"), ("pop3", "delete")])
def test_sigkill_at_random_moments_then_rerun_delivers_each_message_once(
        tmp_path, dovecot, fetchdeliver_cmd, protocol, after):
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    msgs = [make_message(i, f"kill-{protocol}-{after}", body_lines=rng.randint(1, 60)) for i in range(MESSAGES)]
    dovecot.append_many("alice", msgs)
    setup = FetchSetup(tmp_path, dovecot, fetchdeliver_cmd)
    setup.account("work", protocol, "implicit", after=after, batch_size=rng.choice([10, 25, 50]))

    killed_mid_run = 0
    for _ in range(KILLS):
        before = setup.count_delivered()
        if rng.random() < 0.3:
            # During start-up, recovery, login or the first batch: a random moment in the first 0.25 s.
            target, extra = before, rng.random() * 0.25
        else:
            # Once the run has delivered 1-30 more messages, plus up to 4 ms: inside a batch.
            target, extra = before + rng.randint(1, 30), rng.random() * 0.004
        p = setup.popen()
        try:
            while p.poll() is None and setup.count_delivered() < target:
                time.sleep(0.0005)
            deadline = time.monotonic() + extra
            while p.poll() is None and time.monotonic() < deadline:
                pass
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                killed_mid_run += 1
        finally:
            p.communicate(timeout=120)
        if p.returncode == 0:
            break   # this run got to the end before its kill: nothing left to interrupt

    r = setup.run()
    assert r.returncode == 0, f"seed {seed}: {r.stderr}"
    got = setup.delivered()
    ids = [message_id(split_received(raw)[1]) for raw in got]
    dupes = {i for i in ids if ids.count(i) > 1}
    assert not dupes, f"seed {seed}: delivered twice: {sorted(dupes)[:5]}"
    assert sorted(originals(got)) == sorted(lf(msgs)), f"seed {seed}"
    assert killed_mid_run >= 1, f"seed {seed}: no run was interrupted"
    left = dovecot.contents("alice")
    if after == "delete":
        assert left == {}, f"seed {seed}: {len(left)} messages left on the server"
    else:
        assert len(left) == MESSAGES
    r = setup.run()
    assert counts(r.stdout, "work") == (0, 0, 0, 0), r.stderr


def test_sigkill_with_mbox_delivery(tmp_path, dovecot, fetchdeliver_cmd):
    """The same with an mbox: the interrupted deliveries are found by their token in the mbox file."""
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    msgs = [make_message(i, "kill-mbox", body_lines=rng.randint(1, 40)) for i in range(200)]
    dovecot.append_many("alice", msgs)
    setup = FetchSetup(tmp_path, dovecot, fetchdeliver_cmd, mbox=True)
    setup.account("work", "imap", "implicit", after="delete", batch_size=20)
    for _ in range(8):   # each kill can leave a dot-lock, which costs the next run about a second
        target = setup.count_delivered() + rng.randint(1, 30)
        p = setup.popen()
        try:
            while p.poll() is None and setup.count_delivered() < target:
                time.sleep(0.0005)
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
        finally:
            p.communicate(timeout=120)
        if p.returncode == 0:
            break
    r = setup.run()
    assert r.returncode == 0, f"seed {seed}: {r.stderr}"
    got = setup.mbox_messages()
    ids = [message_id(split_received(raw)[1]) for raw in got]
    assert len(ids) == len(set(ids)), f"seed {seed}: some message delivered twice"
    assert sorted(originals(got)) == sorted(lf(msgs)), f"seed {seed}"
    assert dovecot.contents("alice") == {}
