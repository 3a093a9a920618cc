"""What `fetch` stores and what `fetch --dry-run --verbose` says (issue 21, items 4 and 5).

Fetched mail is stored with LF line ends, as LMTP, the MDA, Dovecot, fetchmail+procmail and
getmail store it: CRLF -> LF and nothing else. `keep_crlf = true` in the account stores the
wire bytes. A dry run names the folders the real run files the messages in.
"""

import re

import pytest

from conftest import make_message
from fetchsetup import FetchSetup, counts, originals


@pytest.fixture
def odd():
    return [
        make_message(1, "le"),
        # (a bare LF cannot be tested here: Dovecot sends it as CRLF on the wire)
        make_message(2, "le") + b"a bare CR\rinside\r\n",
        make_message(3, "le") + b"no final newline",
    ]


def test_fetch_stores_lf_and_keep_crlf_stores_the_wire_bytes(tmp_path, dovecot, fetchdeliver_cmd, odd):
    dovecot.append_many("alice", odd)
    lf_setup = FetchSetup(tmp_path / "lf", dovecot, fetchdeliver_cmd)
    (tmp_path / "lf").mkdir()
    lf_setup.account("work", "imap", after="keep")
    r = lf_setup.run()
    assert counts(r.stdout, "work") == (3, 3, 0, 0), r.stderr
    got = lf_setup.delivered()
    # Exactly CRLF -> LF: the bare CR stays as it was.
    assert sorted(originals(got)) == sorted(m.replace(b"\r\n", b"\n") for m in odd)
    assert all(b"\r\n" not in raw for raw in got)
    assert any(b"a bare CR\rinside\n" in raw for raw in got)

    (tmp_path / "crlf").mkdir()
    crlf = FetchSetup(tmp_path / "crlf", dovecot, fetchdeliver_cmd)
    crlf.account("work", "imap", after="keep", keep_crlf=True)
    r = crlf.run()
    assert counts(r.stdout, "work") == (3, 3, 0, 0), r.stderr
    got = crlf.delivered()
    assert sorted(originals(got)) == sorted(odd)
    assert all(raw.split(b"\n", 1)[0].endswith(b"\r") for raw in got)  # our Received: line in CRLF too


def test_dry_run_verbose_names_the_folders_the_real_run_uses(tmp_path, dovecot, fetchdeliver_cmd):
    rules = tmp_path / "rules.sieve"
    rules.write_text('require ["fileinto"];\n'
                     'if header :contains "subject" "message 1" { fileinto "One"; stop; }\n'
                     'if header :contains "subject" "message 2" { discard; stop; }\n')
    setup = FetchSetup(tmp_path, dovecot, fetchdeliver_cmd, rules=str(rules))
    msgs = [make_message(i, "dv") for i in (1, 2, 3)]
    dovecot.append_many("alice", msgs)
    setup.account("work", "imap", after="keep")

    def lines(out):
        return sorted(re.sub(r"^work: \S+ UID (\d+)", r"UID \1", ln) for ln in out.splitlines() if " -> " in ln)

    dry = setup.run("--dry-run", "--verbose")
    assert dry.returncode == 0, dry.stderr
    assert setup.delivered() == []
    real = setup.run("--verbose")
    assert real.returncode == 0, real.stderr
    assert lines(dry.stdout) == lines(real.stdout) and len(lines(real.stdout)) == 3, (dry.stdout, real.stdout)
    said = "\n".join(lines(dry.stdout))
    assert "maildir:One" in said and "maildir:INBOX" in said and "discarded" in said, said
