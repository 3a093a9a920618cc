"""getmailrc (getmail 5/6, one account per file) -> [[account]] TOML.

Retriever types give protocol and TLS (Simple/BrokenUIDL/Multidrop, IMAP/POP3,
SSL or not); `delete` gives after; destinations Maildir/Mboxrd/MDA_external give
the account's maildir/mbox (or a note to convert procmailrc). getmail's
read_all (default true: every message each run) has no equivalent: fetchdeliver
fetches each message once.
"""

from __future__ import annotations

from fetchdeliver.convert.accounts_toml import AccountsResult, ParseError, mda_delivery, \
    password_placeholder

__all__ = ["convert", "ParseError"]


def _tuple(value: str) -> list[str]:
    """getmail's ("a", "b") tuples (Python literals) or a bare string."""
    import ast

    v = value.strip()
    if v.startswith("("):
        try:
            parsed = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            raise ParseError(f"not a Python tuple: {value!r}") from None
        if isinstance(parsed, str):
            return [parsed]
        return [str(x) for x in parsed]
    return [v] if v else []


def _bool(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def convert(sources: list[tuple[str, str]], *, copy_password: bool = False) -> AccountsResult:
    """Convert getmailrc texts [(text, file name)]; raises ParseError on syntax it cannot read."""
    result = AccountsResult()
    for text, name in sources:
        _convert_one(text, name, copy_password, result)
    return result


def _convert_one(text: str, file: str, copy_password: bool, result: AccountsResult) -> None:
    import configparser
    import shlex

    cp = configparser.RawConfigParser(interpolation=None)
    try:
        cp.read_string(text, source=file)
    except configparser.Error as e:
        raise ParseError(str(e).replace("\n", " ")) from None
    if not cp.has_section("retriever"):
        raise ParseError(f"{file}: no [retriever] section")

    def warn(msg: str) -> None:
        result.warnings.append(f"{file}: {msg}")

    r = dict(cp.items("retriever"))
    d = dict(cp.items("destination")) if cp.has_section("destination") else {}
    o = dict(cp.items("options")) if cp.has_section("options") else {}
    rtype = r.get("type", "")
    low = rtype.lower()
    if "imap" in low:
        proto = "imap"
    elif "pop3" in low:
        proto = "pop3"
    else:
        warn(f"retriever type {rtype!r} is not converted (IMAP and POP3 retrievers are)")
        return
    if "multidrop" in low:
        warn(f"{rtype}: multidrop (envelope recipient) retrieval is converted as a single mailbox")
    host = r.get("server")
    user = r.get("username")
    if not host or not user:
        raise ParseError(f"{file}: [retriever] needs server and username")
    acc: dict = {"name": f"{user}@{host}", "protocol": proto, "host": host}
    if r.get("port"):
        acc["port"] = int(r["port"])
    ssl = "ssl" in low
    acc["tls"] = "implicit" if ssl else ("starttls" if _bool(r.get("use_starttls", "false"))
                                          else "none")
    if acc["tls"] == "none":
        result.notes.append(f"{acc['name']}: getmail read this account in plain text; fetchdeliver "
                            "needs tls = \"none\" spelled out as here; consider implicit TLS")
    if r.get("ca_certs") and acc["tls"] != "none":
        acc["ca_file"] = r["ca_certs"]
    if r.get("ssl_fingerprints"):
        fps = [f for f in _tuple(r["ssl_fingerprints"])
               if len(f.replace(":", "").lower()) == 64]
        if fps:
            acc["fingerprint"] = fps[0]
        else:
            warn("ssl_fingerprints: only SHA-256 fingerprints can be pinned")
    acc["user"] = user
    if r.get("password_command"):
        acc["password_command"] = shlex.join(_tuple(r["password_command"]))
    elif copy_password and "password" in r:
        acc["password"] = r["password"]
    else:
        acc["password_command"] = password_placeholder(user, host)
    if proto == "imap":
        boxes = _tuple(r.get("mailboxes", '("INBOX",)'))
        if boxes == ["ALL"]:
            warn("mailboxes = ALL: list the folders by hand")
            boxes = ["INBOX"]
        acc["folders"] = boxes or ["INBOX"]
    delete = _bool(o.get("delete", "false"))
    if o.get("delete_after") or o.get("delete_bigger_than"):
        warn("delete_after / delete_bigger_than: fetchdeliver deletes right after delivery or never")
    if delete:
        acc["after"] = "delete"
    elif proto == "imap" and (_bool(o.get("mark_read", "false")) or
                              _bool(r.get("mark_read", "false"))):
        acc["after"] = "mark-seen"
    elif proto == "imap" and r.get("move_on_delete"):
        acc["after"] = "move:" + r["move_on_delete"]
    else:
        acc["after"] = "keep"
    if not _bool(o.get("read_all", "true")):
        result.notes.append(f"{acc['name']}: read_all = false: fetchdeliver also fetches each message once")
    if "timeout" in r:
        acc["timeout"] = int(float(r["timeout"]))
    def destination(sec: dict) -> bool:
        """Apply one destination section to the account; False if it is not a store we can name."""
        dtype = sec.get("type", "")
        path = sec.get("path", "")
        if dtype == "Maildir":
            acc["maildir"] = path.rstrip("/")
        elif dtype in ("Mboxrd", "Mboxo"):
            acc["mbox"] = path
        elif dtype == "MDA_external":
            cmd = " ".join([shlex.quote(path)] + [shlex.quote(a) for a in _tuple(sec.get("arguments", "()"))])
            acc.update(mda_delivery(cmd, warn, result.notes))
        elif dtype:
            warn(f"destination type {dtype!r} is not converted; the [delivery] store is used")
            return False
        return True

    if d.get("type", "") == "MultiDestination":
        # destinations = ('[section]', '/path/Maildir/', '/path/mbox'): the first store is the
        # account's; fetchdeliver keeps one copy per account, so the others are warned about.
        refs = _tuple(d.get("destinations", "()"))
        secs = []
        for ref in refs:
            if ref.startswith("[") and ref.endswith("]") and cp.has_section(ref[1:-1]):
                secs.append((ref, dict(cp.items(ref[1:-1]))))
            elif ref.startswith(("/", "~")):
                secs.append((ref, {"type": "Maildir" if ref.endswith("/") else "Mboxrd", "path": ref}))
            else:
                warn(f"MultiDestination: {ref!r} is neither a [section] nor a path")
        used = None
        for ref, sec in secs:
            if used is None:
                if destination(sec):
                    used = ref
            else:
                warn(f"MultiDestination: the copy to {ref} is not converted (one store per account: "
                     "add `fileinto :copy` to the Sieve rules or a second account)")
        if used is None:
            warn("MultiDestination without a store fetchdeliver can deliver to; the [delivery] store is used")
    else:
        destination(d)
    if _bool(o.get("read_all", "true")) and "after" in acc and acc["after"] != "delete":
        result.notes.append(f"{acc['name']}: read_all = true: getmail delivered every message left on the "
                            "server again at each run; fetchdeliver fetches each message once")
    result.add(acc, comment=f"from {file}")
