"""`fetchdeliver deliver` as an MTA runs it: one process, message on stdin, exit code."""

import mailbox
import os
import subprocess

import pytest

ODD_MESSAGES = {
    "no-headers": b"no headers at all, just text\n",
    "nul-bytes": b"Subject: nul\n\nbefore\x00after\n",
    "8bit-header": "Subject: grüße\nFrom: Jürgen <j@example.org>\n\nbody\n".encode("latin-1"),
    "bare-cr": b"Subject: cr\r\rbody with bare CR\r",
    "crlf": b"Subject: crlf\r\n\r\nline\r\n",
    "no-final-newline": b"Subject: x\n\nno newline at the end",
    "huge-line": b"Subject: big\n\n" + b"x" * (2 * 1024 * 1024),
    "empty": b"",
    "from-lines": b"Subject: f\n\nFrom here\n>From there\n",
}


def deliver(cmd, args, stdin, env=None):
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(cmd + ["deliver", *args], input=stdin, capture_output=True, timeout=60,
                          env=full_env)


def maildir_files(root, sub="new"):
    d = os.path.join(root, sub)
    return sorted(os.path.join(d, f) for f in os.listdir(d)) if os.path.isdir(d) else []


@pytest.mark.parametrize("name", sorted(ODD_MESSAGES))
def test_odd_message_is_delivered_byte_exact_to_maildir(tmp_path, fetchdeliver_cmd, name):
    raw = ODD_MESSAGES[name]
    md = tmp_path / "Mail"
    r = deliver(fetchdeliver_cmd, ["--maildir", str(md), "-f", "a@example.org"], raw)
    assert r.returncode == 0, r.stderr
    files = maildir_files(md)
    assert len(files) == 1
    assert open(files[0], "rb").read() == raw


def test_mbox_delivery_round_trips_through_stdlib_reader(tmp_path, fetchdeliver_cmd):
    box = tmp_path / "mbox"
    raw = b"From: a@example.org\nSubject: one\n\nFrom the start\n>From quoted\n"
    for _ in range(3):
        r = deliver(fetchdeliver_cmd, ["--mbox", str(box), "-f", "a@example.org"], raw)
        assert r.returncode == 0, r.stderr
    msgs = list(mailbox.mbox(str(box)))
    assert len(msgs) == 3
    text = box.read_bytes()
    assert text.startswith(b"From a@example.org ")
    assert b"\n>From the start\n>>From quoted\n" in text  # mboxrd quoting


def test_unwritable_maildir_is_a_temporary_failure(tmp_path, fetchdeliver_cmd):
    # A plain file where the Maildir should be: root ignores permissions, this it cannot ignore.
    blocker = tmp_path / "Mail"
    blocker.write_text("not a directory")
    r = deliver(fetchdeliver_cmd, ["--maildir", str(blocker)], b"Subject: x\n\nbody\n")
    assert r.returncode == 75
    assert b"temporary" in r.stderr.lower()
    assert blocker.read_text() == "not a directory"


def test_usage_errors_exit_64(tmp_path, fetchdeliver_cmd):
    r = deliver(fetchdeliver_cmd, ["--maildir", "a", "--mbox", "b"], b"")
    assert r.returncode == 64
    r = deliver(fetchdeliver_cmd, ["--bogus"], b"")
    assert r.returncode == 64 and b"--bogus" in r.stderr


def test_config_error_exits_78_and_names_the_key(tmp_path, fetchdeliver_cmd):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[delivery]\nmaildir = "/x"\nmaildirr = "/y"\n')
    r = deliver(fetchdeliver_cmd, ["-c", str(cfg)], b"Subject: x\n\n")
    assert r.returncode == 78
    assert b"delivery.maildirr" in r.stderr


def test_no_config_and_no_store_is_a_config_error(tmp_path, fetchdeliver_cmd):
    r = deliver(fetchdeliver_cmd, [], b"Subject: x\n\n")
    assert r.returncode == 78
    assert b"config" in r.stderr


def test_config_file_delivery_with_rules(tmp_path, fetchdeliver_cmd):
    rules = tmp_path / "rules.sieve"
    rules.write_text('require "fileinto";\nif header :contains "subject" "report" { fileinto "Work/Reports"; }\n')
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[delivery]\nmaildir = "{tmp_path}/Mail"\nrules = "rules.sieve"\n')
    raw = b"Subject: weekly report\n\nfigures\n"
    for _ in range(2):  # the second run uses the cached config and compiled script
        r = deliver(fetchdeliver_cmd, ["-c", str(cfg)], raw)
        assert r.returncode == 0, r.stderr
    files = maildir_files(tmp_path / "Mail" / ".Work.Reports")
    assert len(files) == 2 and all(open(f, "rb").read() == raw for f in files)
    assert maildir_files(tmp_path / "Mail") == []


def test_broken_rules_keep_the_message_in_inbox(tmp_path, fetchdeliver_cmd):
    rules = tmp_path / "rules.sieve"
    rules.write_text('require "fileinto";\nif header :contains "subject" "x" { fileinto "A" }\n')
    raw = b"Subject: x\n\nbody\n"
    r = deliver(fetchdeliver_cmd, ["--maildir", str(tmp_path / "Mail"), "--rules", str(rules)], raw)
    assert r.returncode == 0
    assert b"rules.sieve:2:" in r.stderr  # the error names file and line
    files = maildir_files(tmp_path / "Mail")
    assert len(files) == 1 and open(files[0], "rb").read() == raw


def test_missing_rules_file_keeps_the_message(tmp_path, fetchdeliver_cmd):
    raw = b"Subject: x\n\nbody\n"
    r = deliver(fetchdeliver_cmd, ["--maildir", str(tmp_path / "Mail"), "--rules", str(tmp_path / "nope.sieve")],
                raw)
    assert r.returncode == 0
    assert b"nope.sieve" in r.stderr
    assert len(maildir_files(tmp_path / "Mail")) == 1


def test_fileinto_twice_stores_once_and_flags_land_in_cur(tmp_path, fetchdeliver_cmd):
    rules = tmp_path / "rules.sieve"
    rules.write_text('require ["fileinto", "imap4flags"];\n'
                     'fileinto "A";\nfileinto :flags "\\\\Seen \\\\Flagged" "B";\nfileinto "A";\n')
    raw = b"Subject: x\n\nbody\n"
    r = deliver(fetchdeliver_cmd, ["--maildir", str(tmp_path / "Mail"), "--rules", str(rules)], raw)
    assert r.returncode == 0, r.stderr
    assert len(maildir_files(tmp_path / "Mail" / ".A")) == 1
    cur = maildir_files(tmp_path / "Mail" / ".B", "cur")
    assert len(cur) == 1 and cur[0].endswith(":2,FS")
    assert maildir_files(tmp_path / "Mail") == []  # fileinto cancels implicit keep


def test_escaping_folder_name_goes_to_inbox(tmp_path, fetchdeliver_cmd):
    rules = tmp_path / "rules.sieve"
    rules.write_text('require "fileinto";\nfileinto "../../etc";\n')
    raw = b"Subject: x\n\nbody\n"
    r = deliver(fetchdeliver_cmd, ["--maildir", str(tmp_path / "Mail"), "--rules", str(rules)], raw)
    assert r.returncode == 0
    assert b"etc" in r.stderr
    assert len(maildir_files(tmp_path / "Mail")) == 1
    assert not (tmp_path / "etc").exists()


def test_reject_exits_77_with_the_reason(tmp_path, fetchdeliver_cmd):
    rules = tmp_path / "rules.sieve"
    rules.write_text('require "reject";\nif address :is "from" "spam@example.com" { reject "go away"; }\n')
    r = deliver(fetchdeliver_cmd, ["--maildir", str(tmp_path / "Mail"), "--rules", str(rules)],
                b"From: spam@example.com\n\nbuy\n")
    assert r.returncode == 77
    assert b"go away" in r.stderr
    assert maildir_files(tmp_path / "Mail") == []


def test_envelope_from_environment(tmp_path, fetchdeliver_cmd):
    rules = tmp_path / "rules.sieve"
    rules.write_text('require ["envelope", "fileinto"];\nif envelope :is "from" "x@example.org" { fileinto "X"; }\n')
    r = deliver(fetchdeliver_cmd, ["--maildir", str(tmp_path / "Mail"), "--rules", str(rules)],
                b"Subject: s\n\nb\n", env={"SENDER": "x@example.org", "RECIPIENT": "me@example.org"})
    assert r.returncode == 0, r.stderr
    assert len(maildir_files(tmp_path / "Mail" / ".X")) == 1
