"""Helpers shared by the delivery tests: the odd-message corpus and running Dovecot's doveadm."""

from __future__ import annotations

import os
import subprocess

CORPUS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "odd")


def corpus() -> dict[str, bytes]:
    """{file name: bytes} of tests/corpus/odd plus a 2 MiB single-line message made here."""
    out = {}
    for name in sorted(os.listdir(CORPUS_DIR)):
        if name.endswith(".eml"):
            with open(os.path.join(CORPUS_DIR, name), "rb") as f:
                out[name] = f.read()
    out["generated-2mib-single-line"] = b"Subject: 2 MiB line\n\n" + b"y" * (2 * 1024 * 1024)
    return out


def maildir_files(folder: str, sub: str = "new") -> list[str]:
    d = os.path.join(folder, sub)
    return sorted(os.path.join(d, f) for f in os.listdir(d)) if os.path.isdir(d) else []


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


class Doveadm:
    """Runs `doveadm -c CONF` as an unprivileged user (Dovecot dislikes uid 0) on a mail tree."""

    def __init__(self, conf_dir: str, mail_location: str):
        self.conf = os.path.join(conf_dir, "dovecot.conf")
        with open(self.conf, "w") as f:
            f.write(f"mail_location = {mail_location}\n"
                    "namespace inbox {\n  inbox = yes\n  separator = /\n}\n")
        os.chmod(self.conf, 0o644)
        self.as_root = os.geteuid() == 0

    def hand_over(self, *paths: str) -> None:
        """Give the mail files to `nobody` so doveadm, run as nobody, may read and lock them."""
        if not self.as_root:
            return
        for top in paths:
            for dirpath, dirnames, filenames in os.walk(top):
                os.chown(dirpath, 65534, 65534)
                for n in filenames:
                    os.chown(os.path.join(dirpath, n), 65534, 65534)

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = ["doveadm", "-c", self.conf, *args]
        if self.as_root:
            cmd = ["runuser", "-u", "nobody", "--", *cmd]
        r = subprocess.run(cmd, capture_output=True, timeout=60, cwd="/")
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {r.returncode}: {r.stderr.decode(errors='replace')}")
        return r

    def fetch(self, fields: str, mailbox: str, uid: int) -> bytes:
        return self.run("-f", "pager", "fetch", fields, "mailbox", mailbox, "uid", str(uid)).stdout

    def fetch_text(self, mailbox: str, uid: int) -> bytes:
        out = self.fetch("text", mailbox, uid)
        assert out.startswith(b"text:\n"), out[:200]
        return out[len(b"text:\n"):]

    def fetch_fields(self, fields: str, mailbox: str, uid: int) -> dict[str, str]:
        out = self.fetch(fields, mailbox, uid).decode("utf-8", "replace")
        result = {}
        for line in out.splitlines():
            key, sep, value = line.partition(": ")
            if sep:
                result[key] = value
        return result

    def uids(self, mailbox: str) -> list[int]:
        out = self.run("-f", "flow", "search", "mailbox", mailbox, "all").stdout.decode()
        return [int(line.split()[1]) for line in out.splitlines() if line.strip()]
