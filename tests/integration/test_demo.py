"""The README's first command: `fetchdeliver demo`."""

import os
import subprocess


def test_demo_delivers_every_sample_where_the_rules_say(tmp_path, fetchdeliver_cmd):
    r = subprocess.run(fetchdeliver_cmd + ["demo", "--dir", str(tmp_path)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    mail = tmp_path / "Mail"

    def count(folder, sub="new"):
        d = mail / folder / sub if folder else mail / sub
        return len(os.listdir(d)) if d.is_dir() else 0

    assert count(".Junk", "cur") == 1                      # spam, marked \Seen
    assert count(".Lists.python-weekly") == 1              # List-Id -> Lists/<id>
    assert count(".Receipts") == 1                         # envelope :detail "receipts"
    assert count(".Notifications") == 1                    # CI mail
    assert count("", "cur") == 1                           # the boss, flagged, in INBOX
    assert os.listdir(mail / "cur")[0].endswith(":2,F")
    assert count("") == 2                                  # friend + headerless message: implicit keep
    assert "Lists/python-weekly" in r.stdout and "03-spam.eml" in r.stdout
