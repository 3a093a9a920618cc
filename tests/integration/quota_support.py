"""A Dovecot with the Maildir++ quota (`quota = maildir:User quota`) and our [quota] beside it."""

from __future__ import annotations

import os

QUOTA_CONFIG = """
mail_plugins = $mail_plugins quota
protocol imap {
  mail_plugins = $mail_plugins imap_quota
}
plugin {
  quota = maildir:User quota
  # no grace: the last message may not take the user over the limit (Dovecot lets 10 percent more in)
  quota_grace = 0
%s}
"""


def dovecot_quota_config(rule: str | None = None, grace: bool = False) -> str:
    """Dovecot settings for the Maildir++ quota; `rule` e.g. "*:storage=10K" for every user;
    grace: keep Dovecot's default quota_grace (10%) instead of none."""
    text = QUOTA_CONFIG.replace("%s", f"  quota_rule = {rule}\n" if rule else "")
    if grace:
        text = text.replace("  quota_grace = 0\n", "")
    return text


def chown_tree(path: str, uid: int, gid: int) -> None:
    """Files we wrote as root become the mail user's, for Dovecot's mail processes."""
    if os.geteuid() != 0:
        return
    for dirpath, _dirs, files in os.walk(path):
        os.chown(dirpath, uid, gid)
        for n in files:
            os.chown(os.path.join(dirpath, n), uid, gid)


def dovecot_quota(dc, user: str, mailbox: str = "INBOX") -> dict[str, tuple[int, int]]:
    """{resource: (usage, limit)} as Dovecot's GETQUOTAROOT answers (STORAGE in KiB)."""
    c = dc.imap(user)
    try:
        _roots, quotas = c.get_quota_root(mailbox)
    finally:
        c.logout()
    return {q.resource.upper(): (int(q.usage), int(q.limit)) for q in quotas}
