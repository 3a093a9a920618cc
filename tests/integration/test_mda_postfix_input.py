"""`fetchdeliver deliver` with what Postfix pipes to it, and the outbound queue it fills (issue 21)."""

import os
import subprocess

FROM_LINE = b"From carol@remote.test  Wed Dec  2 12:31:01 2026\n"
MESSAGE = b"Return-Path: <carol@remote.test>\nSubject: hi\nTo: me@example.org\n\nFrom the body\n"


def _maildir_files(root):
    out = []
    for dirpath, _d, files in os.walk(root):
        if os.path.basename(dirpath) in ("new", "cur"):
            for n in files:
                with open(os.path.join(dirpath, n), "rb") as f:
                    out.append((os.path.relpath(dirpath, root), f.read()))
    return out


def _deliver(cmd, tmp_path, *args, stdin=FROM_LINE + MESSAGE, env_sender=None):
    env = dict(os.environ)
    env.pop("SENDER", None)
    if env_sender is not None:
        env["SENDER"] = env_sender
    return subprocess.run(cmd + ["deliver", "--maildir", str(tmp_path / "Mail"), *args], input=stdin,
                          capture_output=True, env=env, timeout=60)


def test_from_line_is_dropped_and_gives_the_envelope_sender(tmp_path, fetchdeliver_cmd):
    rules = tmp_path / "r.sieve"
    rules.write_text('require ["fileinto", "envelope"];\n'
                     'if envelope :is "from" "carol@remote.test" { fileinto "Carol"; }\n')
    r = _deliver(fetchdeliver_cmd, tmp_path, "--rules", str(rules), "-a", "me@example.org",
                 env_sender="other@remote.test")
    assert r.returncode == 0, r.stderr
    assert _maildir_files(tmp_path / "Mail") == [(".Carol/new", MESSAGE)]


def test_f_wins_over_the_from_line(tmp_path, fetchdeliver_cmd):
    rules = tmp_path / "r.sieve"
    rules.write_text('require ["fileinto", "envelope"];\n'
                     'if envelope :is "from" "carol@remote.test" { fileinto "Carol"; }\n')
    r = _deliver(fetchdeliver_cmd, tmp_path, "--rules", str(rules), "-f", "dave@remote.test")
    assert r.returncode == 0, r.stderr
    assert _maildir_files(tmp_path / "Mail") == [("new", MESSAGE)]


def test_redirect_without_a_relay_is_queued_for_mx_delivery(tmp_path, fetchdeliver_cmd):
    rules = tmp_path / "r.sieve"
    rules.write_text('redirect "friend@elsewhere.test";\n')
    r = _deliver(fetchdeliver_cmd, tmp_path, "--rules", str(rules), "-a", "me@example.org")
    assert r.returncode == 0, r.stderr
    assert b"not configured" not in r.stderr
    assert _maildir_files(tmp_path / "Mail") == []          # redirected, not kept
    listed = subprocess.run(fetchdeliver_cmd + ["queue", "list"], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert "1 message(s) in the queue" in listed.stdout
    assert "<carol@remote.test> -> <friend@elsewhere.test>" in listed.stdout


def test_dry_run_queues_nothing(tmp_path, fetchdeliver_cmd):
    rules = tmp_path / "r.sieve"
    rules.write_text('redirect "friend@elsewhere.test";\n')
    r = _deliver(fetchdeliver_cmd, tmp_path, "--rules", str(rules), "-n")
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"would deliver to queue:redirect <friend@elsewhere.test>\n"
    listed = subprocess.run(fetchdeliver_cmd + ["queue", "list"], capture_output=True, text=True, timeout=60)
    assert "the queue is empty" in listed.stdout


def test_stored_bytes_match_procmail_given_the_same_input(tmp_path, fetchdeliver_cmd):
    """procmail, the MDA users convert from, drops the From_ line in a Maildir the same way."""
    import shutil

    import pytest

    if shutil.which("procmail") is None:
        pytest.skip("procmail is not installed (.ci/run installs it)")
    stdin = FROM_LINE + MESSAGE + b"\nFrom again, no quoting in a Maildir\n"
    rc = tmp_path / "procmailrc"
    rc.write_text(f"DEFAULT={tmp_path}/pm/\nLOGFILE=/dev/null\n")
    p = subprocess.run(["procmail", "-m", str(rc)], input=stdin, capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    r = _deliver(fetchdeliver_cmd, tmp_path, stdin=stdin)
    assert r.returncode == 0, r.stderr
    (theirs,) = [raw for _d, raw in _maildir_files(tmp_path / "pm")]
    (ours,) = [raw for _d, raw in _maildir_files(tmp_path / "Mail")]
    assert ours == theirs == stdin[len(FROM_LINE):]
