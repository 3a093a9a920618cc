"""Gmail's labels (X-GM-LABELS) reach the rules as an `X-Gmail-Labels:` header, and a message seen in several
fetched folders (INBOX, All Mail, a label's folder) is delivered once, by X-GM-MSGID, its body fetched once.
Against the scripted responder reproducing Gmail's behaviour (no Gmail here)."""

from __future__ import annotations

import os

from conftest import make_message
from fetchsetup import FetchSetup, counts, lf
from scripted_imap import GmailLabelsAcrossFolders

RULES = b"""require ["fileinto"];
if header :contains "X-Gmail-Labels" "Work" { fileinto "Work"; }
elsif header :contains "X-Gmail-Labels" "Re\xc3\xa7us" { fileinto "Receipts"; }
"""


def test_gmail_labels_to_sieve_and_one_delivery_per_msgid(tmp_path, fetchdeliver_cmd):
    in_inbox = make_message(1, "gm-inbox")
    archived = make_message(2, "gm-archived")
    work = {"raw": in_inbox, "msgid": 1611111111111111111, "labels": ["\\Inbox", "\\Important", "Work"]}
    receipt = {"raw": archived, "msgid": 1622222222222222222, "labels": ["Re\u00e7us", "a, b"]}
    folders = {"INBOX": [work], "[Gmail]/All Mail": [work, receipt], "Work": [work]}
    rules = tmp_path / "rules.sieve"
    rules.write_bytes(RULES)
    with GmailLabelsAcrossFolders(folders) as srv:
        setup = FetchSetup(tmp_path, None, fetchdeliver_cmd, rules=str(rules))
        acc = {"name": "gmail", "protocol": "imap", "host": "127.0.0.1", "port": srv.port, "tls": "none",
               "user": "me@gmail.com", "password": "app-password", "after": "mark-seen",
               "folders": ["INBOX", "[Gmail]/All Mail", "Work"]}
        setup.accounts.append(acc)
        setup.write()
        r = setup.run("--verbose")
        assert r.returncode == 0, r.stderr
        assert counts(r.stdout, "gmail") == (2, 2, 2, 0), r.stdout
        assert "1 message already delivered from another Gmail folder (same X-GM-MSGID), skipped" in r.stdout
        # Each body was fetched once: the All Mail and Work copies of the INBOX message were never downloaded.
        bodies = [c for c in srv.commands if "BODY.PEEK[]" in c]
        assert bodies == ["UID FETCH 1 (BODY.PEEK[])", "UID FETCH 2 (BODY.PEEK[])"], srv.commands
        # The copies skipped by X-GM-MSGID were acknowledged like any duplicate (after = "mark-seen").
        stores = [c for c in srv.commands if c.startswith("UID STORE")]
        assert len(stores) == 4, srv.commands
        (w,) = setup.delivered("Work")
        (rc,) = setup.delivered("Receipts")
        assert setup.delivered("INBOX") == []
        assert w.startswith(b"X-Gmail-Labels: \\Inbox, \\Important, Work\nReceived: ")
        assert rc.startswith('X-Gmail-Labels: Re\u00e7us, "a, b"\nReceived: '.encode())
        # Only the added headers come before the original bytes (stored with LF line ends).
        assert w.split(b"\n", 2)[2] == lf(in_inbox) and rc.split(b"\n", 2)[2] == lf(archived)
        r = setup.run()
        assert counts(r.stdout, "gmail") == (0, 0, 0, 0), r.stdout
    assert os.path.exists(setup.state_dir)
