"""fetchmailrc -> [[account]] TOML.

Mapping of fetchmail's defaults: without `keep` fetchmail deletes what it
fetched (after = "delete"); with `keep` an IMAP message is left seen (after =
"mark-seen", with or without `fetchall`), a POP3 one as it was (after = "keep"). `ssl` is implicit TLS, `sslproto ''` plain text, anything else
STARTTLS (fetchmail 6.4 uses it whenever the server offers it).
"""

from __future__ import annotations

from fetchdeliver.convert.accounts_toml import AccountsResult, ParseError, mda_delivery, password_placeholder

__all__ = ["convert", "ParseError"]

NOISE = {"and", "with", "has", "wants", "options", "here", ";", ",", ":"}
PROTOCOLS = {"imap": "imap", "pop3": "pop3", "apop": "pop3", "auto": "imap", "rpop": "pop3",
             "kpop": "pop3", "sdps": "pop3"}
# Keywords that run a command around the connection: not converted, warned about.
COMMANDS = {"plugin": "a command that makes the connection", "plugout": "a command that makes the SMTP connection",
            "preconnect": "a command run before each poll", "postconnect": "a command run after each poll"}
MULTIDROP = ("fetchdeliver delivers every message of an account to one store (no multidrop split by "
             "envelope recipient); the Sieve rules can still sort by header")
# Keywords followed by one value that the converter does not need.
IGNORED_ARG = {"interface", "monitor", "principal", "esmtpname", "esmtppassword",
               "sslkey", "sslcert", "sslcertpath", "antispam", "batchlimit", "expunge", "fetchsizelimit",
               "fastuidl", "warnings", "bsmtp", "lmtp", "fetchdomains", "smtpaddress", "smtpname",
               "tracepolls", "properties", "pidfile", "logfile", "postmaster",
               "syslog", "invisible", "bouncemail", "spambounce", "softbounce", "showdots", "no"}
IGNORED_FLAG = {"dns", "nodns", "checkalias", "nocheckalias", "dropstatus", "dropdelivered",
                "mimedecode", "stripcr", "forcecr", "pass8bits", "rewrite", "norewrite", "idle",
                "tracepolls", "there", "is", "to", "sslcertck", "nokeep", "nofetchall", "noflush"}


def tokenize(text: str) -> list[tuple[int, str, bool]]:
    """(line, word, quoted) for every word; # starts a comment outside quotes."""
    out: list[tuple[int, str, bool]] = []
    line = 1
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            i += 1
        elif c.isspace() or c in ",;:":
            i += 1
        elif c == "#":
            while i < n and text[i] != "\n":
                i += 1
        elif c in "\"'":
            j = i + 1
            buf = []
            while j < n and text[j] != c:
                if text[j] == "\\" and j + 1 < n:
                    j += 1
                    buf.append({"n": "\n", "t": "\t"}.get(text[j], text[j]))
                else:
                    if text[j] == "\n":
                        line += 1
                    buf.append(text[j])
                j += 1
            if j >= n:
                raise ParseError(f"line {line}: unterminated {c}string")
            out.append((line, "".join(buf), True))
            i = j + 1
        else:
            j = i
            while j < n and not text[j].isspace() and text[j] not in ",;:#\"'":
                j += 1
            out.append((line, text[i:j], False))
            i = j
    return out


class _Server:
    def __init__(self, line: int, host: str, skip: bool, defaults: dict) -> None:
        self.line, self.host, self.skip = line, host, skip
        self.opts: dict = dict(defaults.get("server", {}))
        self.users: list[dict] = []
        self.user_defaults: dict = dict(defaults.get("user", {}))


def convert(sources: list[tuple[str, str]], *, copy_password: bool = False) -> AccountsResult:
    """Convert fetchmailrc texts [(text, file name)]; raises ParseError on syntax it cannot read."""
    result = AccountsResult()
    for text, name in sources:
        _convert_one(text, name, copy_password, result)
    return result


def _convert_one(text: str, file: str, copy_password: bool, result: AccountsResult) -> None:
    toks = tokenize(text)
    servers: list[_Server] = []
    defaults: dict = {"server": {}, "user": {}}
    cur: _Server | None = None
    target: dict | None = None  # the option dict being filled (server defaults, server, user)
    i = 0

    def warn(line: int, msg: str) -> None:
        result.warnings.append(f"{file}:{line}: {msg}")

    def arg() -> str:
        nonlocal i
        i += 1
        if i >= len(toks):
            raise ParseError(f"{file}: {toks[i - 1][1]} needs a value at the end of the file")
        return toks[i][1]

    while i < len(toks):
        line, word, quoted = toks[i]
        w = word.lower() if not quoted else word
        if not quoted and w == "set":
            key = arg().lower()
            if key in ("daemon", "logfile", "idfile", "postmaster", "pidfile", "properties"):
                val = arg()
                result.notes.append(f"set {key} {val}: " + (
                    "run `fetchdeliver daemon` (or `fetchdeliver fetch` from a timer) instead"
                    if key == "daemon" else "not needed by fetchdeliver"))
            elif key == "syslog":
                pass
            elif key == "no":
                arg()
            else:
                result.notes.append(f"set {key}: ignored")
            i += 1
            continue
        if not quoted and w in ("poll", "skip"):
            cur = _Server(line, arg(), w == "skip", defaults)
            servers.append(cur)
            target = cur.opts
            i += 1
            continue
        if not quoted and w == "defaults":
            cur = None
            target = defaults["server"]
            i += 1
            continue
        if target is None:
            raise ParseError(f"{file}:{line}: {word!r} outside a poll/skip/defaults entry")
        if not quoted and w in ("user", "username"):
            u = dict(cur.user_defaults if cur else {})
            u["user"] = arg()
            u["line"] = line
            if cur is None:
                defaults["user"].update(u)
                target = defaults["user"]
            else:
                cur.users.append(u)
                target = u
            i += 1
            continue
        if quoted or w in NOISE:
            i += 1
            continue
        if w in ("proto", "protocol"):
            p = arg().lower()
            if p not in PROTOCOLS:
                warn(line, f"protocol {p} is not supported (IMAP and POP3 are)")
            target["protocol"] = PROTOCOLS.get(p, p)
            if p == "apop":
                target["apop"] = True
            if p == "auto":
                warn(line, "protocol auto: converted as imap")
        elif w in ("port", "service"):
            v = arg()
            if v.isdigit():
                target["port"] = int(v)
            else:
                warn(line, f"service {v}: give the port number")
        elif w in ("pass", "password"):
            target["password"] = arg()
        elif w in ("passwordfile",):
            target["password_file"] = arg()
        elif w == "auth":
            a = arg().lower()
            if a in ("oauthbearer", "xoauth2"):
                target["oauth2"] = a
            elif a not in ("password", "any", "cram-md5", "login", "plain"):
                warn(line, f"auth {a} is not supported (passwords and OAuth2 are)")
        elif w == "timeout":
            target["timeout"] = int(arg())
        elif w in ("folder", "folders"):
            folders = [arg()]
            while i + 1 < len(toks) and toks[i + 1][0] == toks[i][0] and _is_value(toks[i + 1]):
                i += 1
                folders.append(toks[i][1])
            target["folders"] = folders
        elif w == "keep":
            target["keep"] = True
        elif w == "nokeep":
            target["keep"] = False
        elif w == "fetchall":
            target["fetchall"] = True
        elif w == "flush":
            target["flush"] = True
            warn(line, "flush (delete old messages first): fetchdeliver deletes only what it delivered")
        elif w in ("limit", "fetchlimit"):
            warn(line, f"{w} {arg()}: no size/count limit in fetchdeliver")
        elif w == "mda":
            target["mda"] = arg()
        elif w in ("smtphost", "smtpaddress"):
            warn(line, f"{w} {arg()}: fetchdeliver delivers itself instead of forwarding by SMTP")
            target["smtp"] = True
        elif w == "ssl":
            target["ssl"] = True
        elif w == "sslproto":
            target["sslproto"] = arg()
        elif w == "sslcertfile":
            target["ca_file"] = arg()
        elif w == "via":
            target["via"] = arg()
        elif w == "sslcommonname":
            warn(line, f"sslcommonname {arg()}: fetchdeliver checks the certificate against the host name; "
                 "pin it with fingerprint instead")
        elif w == "sslfingerprint":
            target["fingerprint"] = arg()
        elif w == "no":
            nxt = arg().lower()
            if nxt in ("keep", "fetchall", "flush", "rewrite", "mimedecode", "dns", "uidl", "envelope",
                       "idle", "sslcertck", "ssl"):
                if nxt == "sslcertck":
                    warn(line, "no sslcertck: fetchdeliver always verifies certificates; "
                         "use ca_file or fingerprint for a self-signed server")
                target[nxt] = False
        elif w == "is" or w == "to":
            local = []
            while i + 1 < len(toks) and _is_value(toks[i + 1]) and toks[i + 1][1].lower() not in (
                    "here", "there", "with", "options", "and", "user", "username", "poll", "skip"):
                i += 1
                local.append(toks[i][1])
            if len(local) > 1 or "*" in local:
                warn(line, f"{w} {' '.join(local)}: several local users (multidrop); " + MULTIDROP)
        elif w in COMMANDS:
            warn(line, f"{w} {arg()!r}: {COMMANDS[w]}; not converted (fetchdeliver connects itself; run the "
                 "command from a timer or a wrapper if it is still needed)")
        elif w in ("aka", "localdomains", "fetchdomains"):
            names = [arg()]
            while i + 1 < len(toks) and toks[i + 1][0] == toks[i][0] and _is_value(toks[i + 1]):
                i += 1
                names.append(toks[i][1])
            warn(line, f"{w} {' '.join(names)}: multidrop name matching; " + MULTIDROP)
        elif w == "envelope":
            v = arg()
            if v.isdigit():
                v = arg()
            warn(line, f"envelope {v}: multidrop by envelope header; " + MULTIDROP +
                 f" (e.g. `if header :contains \"{v}\" \"...\"`)")
        elif w == "qvirtual":
            warn(line, f"qvirtual {arg()}: multidrop prefix stripping; " + MULTIDROP)
        elif w == "uidl":
            result.notes.append(f"{file}:{line}: uidl: fetchdeliver always remembers what it fetched "
                                "(POP3 UIDLs, IMAP UIDs) in its state database")
        elif w in IGNORED_ARG:
            if w not in ("no",):
                arg()
        elif w in IGNORED_FLAG:
            pass
        else:
            warn(line, f"fetchmail option {word!r} is not converted")
        i += 1

    for s in servers:
        users = s.users or ([dict(defaults["user"], line=s.line)] if defaults["user"].get("user") else [])
        if not users:
            warn(s.line, f"poll {s.host}: no user given")
            continue
        for u in users:
            opts = dict(s.opts)
            opts.update({k: v for k, v in u.items()})
            acc = _account(s, opts, file, copy_password, warn, result)
            if acc is not None:
                result.add(acc, comment_out=s.skip,
                           comment=f"from {file}:{s.line}" + (" (a `skip` entry)" if s.skip else ""))


def _is_value(tok) -> bool:
    return tok[2] or tok[1].lower() not in _KEYWORDS


_KEYWORDS = {"poll", "skip", "defaults", "user", "username", "proto", "protocol", "port", "service", "pass",
             "password", "keep", "nokeep", "fetchall", "flush", "mda", "ssl", "sslproto", "sslcertfile",
             "sslcertck", "sslfingerprint", "folder", "folders", "timeout", "auth", "no", "is", "to", "here",
             "there", "with", "options", "and", "limit", "via", "sslcommonname", "fetchlimit", "smtphost", "uidl", "set",
             "aka", "localdomains", "fetchdomains", "envelope", "qvirtual", "plugin", "plugout", "preconnect",
             "postconnect"}


def _account(s: _Server, o: dict, file: str, copy_password: bool, warn, result) -> dict | None:
    line = o.get("line", s.line)
    proto = o.get("protocol")
    if proto is None:
        warn(line, f"poll {s.host}: no protocol; converted as imap (fetchmail would probe)")
        proto = "imap"
    if proto not in ("imap", "pop3"):
        warn(line, f"poll {s.host}: protocol {proto} skipped")
        return None
    user = o["user"]
    # `via` is the address to connect to; the poll name is then only a label.
    acc: dict = {"name": f"{user}@{s.host}", "protocol": proto, "host": o.get("via", s.host)}
    if "port" in o:
        acc["port"] = o["port"]
    if o.get("ssl"):
        acc["tls"] = "implicit"
    elif o.get("sslproto", None) == "":
        acc["tls"] = "none"
    else:
        acc["tls"] = "starttls"
    if "ca_file" in o and acc["tls"] != "none":
        acc["ca_file"] = o["ca_file"]
    fp = o.get("fingerprint")
    if fp:
        hexd = fp.replace(":", "").replace(" ", "").lower()
        if len(hexd) == 64:
            acc["fingerprint"] = fp
        else:
            warn(line, f"sslfingerprint {fp}: fetchmail's is MD5, fetchdeliver pins SHA-256 "
                 "(openssl x509 -noout -fingerprint -sha256)")
    acc["user"] = user
    if o.get("oauth2"):
        acc["oauth2_token_command"] = f"echo 'fetchdeliver: set oauth2_token_command for {user}@{s.host}' >&2; exit 1"
        acc["oauth2_mechanism"] = o["oauth2"]
    elif copy_password and "password" in o:
        acc["password"] = o["password"]
    elif copy_password and "password_file" in o:
        acc["password_command"] = f"head -n 1 {o['password_file']}"
    else:
        acc["password_command"] = password_placeholder(user, s.host)
    if proto == "imap":
        acc["folders"] = o.get("folders") or ["INBOX"]
    elif o.get("folders"):
        warn(line, "folders on a POP3 account: POP3 has only one mailbox")
    keep, fetchall = o.get("keep", False), o.get("fetchall", False)
    if not keep:
        acc["after"] = "delete"
    elif proto == "imap":
        acc["after"] = "mark-seen"  # fetchmail reads with BODY[]: the message becomes \Seen
    else:
        acc["after"] = "keep"
    if proto == "imap" and keep and not fetchall:
        result.notes.append(f"{acc['name']}: fetchmail fetched only unseen mail; the first "
                            "`fetchdeliver fetch` takes every message not fetched before "
                            "(initial = \"new-only\" skips what is there now)")
    if "timeout" in o:
        acc["timeout"] = o["timeout"]
    if o.get("apop"):
        acc["apop"] = True
    if o.get("mda"):
        acc.update(mda_delivery(o["mda"], lambda m: warn(line, m), result.notes))
    elif not o.get("smtp"):
        result.notes.append(f"{acc['name']}: fetchmail forwarded to SMTP on localhost; fetchdeliver "
                            "delivers to the [delivery] store itself")
    return acc
