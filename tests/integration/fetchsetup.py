"""Helpers for the fetch tests: write a config for accounts on a test Dovecot, run `fetchdeliver fetch`,
read what was delivered."""

from __future__ import annotations

import os
import subprocess


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    s = str(v).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{s}"'


class FetchSetup:
    """A config file with [[account]] entries pointing at a Dovecot fixture, and ways to run fetch."""

    def __init__(self, tmp_path, dovecot, cmd: list[str], *, rules: str | None = None,
                 mbox: bool = False) -> None:
        self.dir = tmp_path
        self.dovecot = dovecot
        self.cmd = cmd
        self.maildir = str(tmp_path / "Mail")
        self.mbox = str(tmp_path / "mbox") if mbox else None
        self.state_dir = str(tmp_path / "state")
        self.config = str(tmp_path / "config.toml")
        self.rules = rules
        self.accounts: list[dict] = []

    def account(self, name: str, protocol: str = "imap", tls: str = "implicit", *, user: str = "alice",
                **keys) -> dict:
        """Add an account; port and ca_file follow protocol and tls unless given."""
        listener = {("imap", "implicit"): "imaps", ("pop3", "implicit"): "pop3s"}.get(
            (protocol, tls), protocol)
        acc = {"name": name, "protocol": protocol, "host": "127.0.0.1",
               "port": self.dovecot.port(listener), "tls": tls, "user": user}
        if tls != "none":
            acc["ca_file"] = self.dovecot.ca_file
        if not any(k in keys for k in ("password", "password_command")) and not any(
                k.startswith("oauth2_") for k in keys):
            acc["password"] = self.dovecot.users[user]
        acc.update({k: v for k, v in keys.items() if v is not None})
        for k in [k for k, v in keys.items() if v is None]:
            acc.pop(k, None)
        self.accounts.append(acc)
        self.write()
        return acc

    def write(self) -> None:
        store = f"mbox = {toml_value(self.mbox)}" if self.mbox else f"maildir = {toml_value(self.maildir)}"
        lines = ["[delivery]", store, f"state_dir = {toml_value(self.state_dir)}"]
        if self.rules:
            lines.append(f"rules = {toml_value(self.rules)}")
        for acc in self.accounts:
            lines.append("")
            lines.append("[[account]]")
            lines.extend(f"{k} = {toml_value(v)}" for k, v in acc.items())
        with open(self.config, "w") as f:
            f.write("\n".join(lines) + "\n")

    def repoint(self) -> None:
        """After the Dovecot fixture restarted on new ports: update every account's port."""
        for acc in self.accounts:
            tls, proto = acc["tls"], acc["protocol"]
            listener = {("imap", "implicit"): "imaps", ("pop3", "implicit"): "pop3s"}.get((proto, tls), proto)
            acc["port"] = self.dovecot.port(listener)
        self.write()

    def argv(self, *args: str) -> list[str]:
        return self.cmd + ["fetch", "-c", self.config, *args]

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(*args), capture_output=True, text=True, timeout=timeout)

    def popen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(self.argv(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)

    # -- what was delivered ----------------------------------------------------------------
    def delivered(self, folder: str | None = None) -> list[bytes]:
        """Raw bytes of every delivered message (all folders, or one Maildir++ folder)."""
        return [raw for _, raw in self.delivered_files(folder)]

    def delivered_files(self, folder: str | None = None) -> list[tuple[str, bytes]]:
        out = []
        if not os.path.isdir(self.maildir):
            return out
        for dirpath, _dirs, files in os.walk(self.maildir):
            leaf = os.path.basename(dirpath)
            if leaf not in ("new", "cur"):
                continue
            box = os.path.dirname(dirpath)
            name = "INBOX" if box == self.maildir else os.path.basename(box)[1:].replace(".", "/")
            if folder is not None and name != folder:
                continue
            for fn in sorted(files):
                path = os.path.join(dirpath, fn)
                with open(path, "rb") as f:
                    out.append((path, f.read()))
        return out

    def mbox_messages(self) -> list[bytes]:
        """Messages in the mbox file, From_ line removed and mboxrd quoting undone."""
        import re

        if not os.path.exists(self.mbox):
            return []
        with open(self.mbox, "rb") as f:
            data = f.read()
        # Each message is followed by a blank line; the split eats the one before the next From_.
        chunks = re.split(rb"(?:^|\n)From [^\n]*\n", data)[1:]
        if chunks and chunks[-1].endswith(b"\n"):
            chunks[-1] = chunks[-1][:-1]
        return [re.sub(rb"(?m)^>(>*From )", rb"\1", c) for c in chunks]

    def count_delivered(self) -> int:
        if self.mbox:
            if not os.path.exists(self.mbox):
                return 0
            with open(self.mbox, "rb") as f:
                data = f.read()
            return data.count(b"\nFrom ") + data.startswith(b"From ")
        n = 0
        if not os.path.isdir(self.maildir):
            return 0
        for dirpath, _dirs, files in os.walk(self.maildir):
            if os.path.basename(dirpath) in ("new", "cur"):
                n += len(files)
        return n


def split_received(raw: bytes) -> tuple[bytes, bytes]:
    """(the Received: line fetchdeliver added, the original message)."""
    assert raw.startswith(b"Received: "), raw[:200]
    nl = raw.index(b"\n") + 1
    return raw[:nl], raw[nl:]


def lf(messages):
    """What fetch stores for wire bytes (one message or a list): CRLF -> LF, nothing else
    (the default; `keep_crlf = true` stores the wire bytes)."""
    if isinstance(messages, bytes):
        return messages.replace(b"\r\n", b"\n")
    return [m.replace(b"\r\n", b"\n") for m in messages]


def originals(delivered: list[bytes]) -> list[bytes]:
    return [split_received(raw)[1] for raw in delivered]


def summary(stdout: str, name: str) -> str:
    """The account's summary line (`name: N fetched, ...`)."""
    lines = [ln for ln in stdout.splitlines() if ln.startswith(f"{name}: ") and " fetched, " in ln]
    assert len(lines) == 1, stdout
    return lines[0]


def counts(stdout: str, name: str) -> tuple[int, int, int, int]:
    """(fetched, delivered, duplicates, failed) parsed from the summary line; checks its exact format."""
    import re

    line = summary(stdout, name)
    m = re.fullmatch(re.escape(name) + r": (\d+) fetched, (\d+) delivered, (\d+) duplicates skipped, "
                     r"(\d+) failed", line)
    assert m, line
    return tuple(int(x) for x in m.groups())
