#!/usr/bin/env python3
"""MDA pipe-mode benchmark: fetchdeliver vs procmail, maildrop and dovecot-lda.

Every message is delivered by one fresh process per tool, as an MTA would do it,
through the same 20 rules (one table rendered as Sieve, procmailrc and
mailfilter) into 10 Maildir++ folders plus INBOX. The tools take turns on each
message (the order rotates) so disk and CPU noise hit them alike. At the end the
folder of every message is compared across tools: the run fails loudly when the
routing differs, a message is lost or duplicated, or a tool exits non-zero.

Run as root (see benchmarks/README.md):
    /work/main/.venv/bin/python benchmarks/mda_pipe.py [--count 2000] [--tools ...] [--keep]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NOBODY_UID = NOBODY_GID = 65534
DOVECOT_LDA = "/usr/lib/dovecot/dovecot-lda"
ALL_TOOLS = ("fetchdeliver", "procmail", "maildrop", "dovecot-lda")
ME = "me@example.org"
SHORT = {"fetchdeliver (plain venv)": "fd-plainvenv"}  # column names in the routing table

# ----------------------------------------------------------------------------------
# The rules: one table, rendered three ways. First match wins (Sieve `stop`, a
# delivering procmail recipe, maildrop `to`); no match means INBOX.
# A condition is a tuple:
#   ("header", match, [names], [keys])   match: contains | is | matches (glob * ?)
#   ("address", part, [keys])            From: header address, part: all | domain, :is
#   ("envelope", part, [keys])           envelope sender, part: all | domain, :is
#   ("exists", [names])
#   ("allof", [conds]) ("anyof", [conds]) ("not", cond)
# Only what procmail and maildrop can say without a shell is allowed: `anyof` of
# header-level tests (one regex with alternatives) and `not` at the top of an
# `allof`.

def H(match, names, keys):
    return ("header", match, names, keys)


def ADDR(part, keys):
    return ("address", part, keys)


def ENV(part, keys):
    return ("envelope", part, keys)


def EXISTS(names):
    return ("exists", names)


def ALL(*conds):
    return ("allof", list(conds))


def ANY(*conds):
    return ("anyof", list(conds))


def NOT(cond):
    return ("not", cond)


RULES = [
    ("Junk", H("is", ["X-Spam-Flag"], ["YES"])),
    ("Junk", H("contains", ["Subject"], ["***SPAM***"])),
    ("Python", H("contains", ["List-Id"], ["python-dev.python.org"])),
    ("Python", H("contains", ["List-Id"], ["python-ideas.python.org"])),
    ("Debian", ENV("domain", ["lists.debian.org"])),
    ("Debian", H("contains", ["List-Id"], ["debian-user.lists.debian.org"])),
    ("Reports", ALL(ADDR("domain", ["corp.example.com"]), H("contains", ["Subject"], ["weekly report"]))),
    ("Reports", H("matches", ["Subject"], ["[Jenkins]*"])),
    ("Reports", ADDR("all", ["reports@analytics.example.net"])),
    ("Work", ALL(ADDR("domain", ["corp.example.com"]), NOT(H("contains", ["Subject"], ["[social]"])))),
    ("Work", H("contains", ["To", "Cc"], ["team@corp.example.com"])),
    ("Billing", ALL(ADDR("all", ["billing@cloudhost.example"]), H("contains", ["Subject"], ["invoice"]))),
    ("Billing", H("contains", ["Subject"], ["receipt", "payment confirmation"])),
    ("Alerts", ADDR("domain", ["monitoring.example.net"])),
    ("Alerts", H("matches", ["Subject"], ["*[ALERT]*"])),
    ("Alerts", EXISTS(["X-Alertmanager-Status"])),
    ("Social", ADDR("domain", ["facebookmail.example", "social.example.org"])),
    ("Newsletters", ANY(EXISTS(["List-Unsubscribe"]), H("is", ["Precedence"], ["bulk"]))),
    ("Newsletters", H("contains", ["Subject"], ["newsletter"])),
    ("Family", ANY(ADDR("domain", ["family.example"]), H("contains", ["To"], ["family@home.example"]))),
]
FOLDERS = sorted({folder for folder, _ in RULES})


def _sieve_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _sieve_list(items) -> str:
    return _sieve_str(items[0]) if len(items) == 1 else "[" + ", ".join(map(_sieve_str, items)) + "]"


def sieve_test(c) -> str:
    kind = c[0]
    if kind == "header":
        return f"header :{c[1]} {_sieve_list(c[2])} {_sieve_list(c[3])}"
    if kind == "address":
        return f"address :{c[1]} :is \"from\" {_sieve_list(c[2])}"
    if kind == "envelope":
        return f"envelope :{c[1]} :is \"from\" {_sieve_list(c[2])}"
    if kind == "exists":
        return f"exists {_sieve_list(c[1])}"
    if kind in ("allof", "anyof"):
        return f"{kind}(" + ", ".join(sieve_test(x) for x in c[1]) + ")"
    if kind == "not":
        return "not " + sieve_test(c[1])
    raise ValueError(kind)


def render_sieve() -> str:
    lines = ["# fetchdeliver benchmark rules: 20 rules, 10 folders; the same as procmailrc and mailfilter",
             'require ["fileinto", "envelope"];', ""]
    for folder, cond in RULES:
        lines.append(f"if {sieve_test(cond)} {{\n  fileinto {_sieve_str(folder)};\n  stop;\n}}")
    return "\n".join(lines) + "\n"


def _rx(s: str) -> str:
    """Escape a literal for procmail's egrep dialect and maildrop's PCRE alike."""
    return re.sub(r"([.*+?^$|()\[\]{}\\/])", r"\\\1", s)


def _alt(items) -> str:
    return "(" + "|".join(items) + ")" if len(items) > 1 else items[0]


def header_regex(c) -> str:
    """One regex over the header (procmail also sees its From_ line there)."""
    kind = c[0]
    if kind == "header":
        names = _alt([_rx(n) for n in c[2]])
        if c[1] == "contains":
            return f"^{names}:.*{_alt([_rx(k) for k in c[3]])}"
        if c[1] == "is":
            return f"^{names}: *{_alt([_rx(k) for k in c[3]])} *$"
        if c[1] == "matches":
            globs = [_rx(k).replace("\\*", ".*").replace("\\?", ".") for k in c[3]]
            return f"^{names}: *{_alt(globs)} *$"
    if kind == "address":
        if c[1] == "all":
            return f"^From:(.*<| *){_alt([_rx(k) for k in c[2]])}(>| *$)"
        return f"^From:.*@{_alt([_rx(k) for k in c[2]])}(>| *$)"
    if kind == "envelope":  # procmail's From_ line: "From sender  date"
        if c[1] == "all":
            return f"^From {_alt([_rx(k) for k in c[2]])} "
        return f"^From [^ ]*@{_alt([_rx(k) for k in c[2]])} "
    if kind == "exists":
        return f"^{_alt([_rx(n) for n in c[1]])}:"
    if kind == "anyof":
        return "(" + "|".join(header_regex(x) for x in c[1]) + ")"
    raise ValueError(f"cannot express {kind} as one regex")


def render_procmailrc() -> str:
    # $MD is given on the command line (MD=/abs/Maildir): procmail run by root
    # ignores $HOME, so every path is absolute.
    out = ["# fetchdeliver benchmark rules, procmail version", "SHELL=/bin/sh", "MAILDIR=$MD",
           "DEFAULT=$MD/", "LOGFILE=", "VERBOSE=off", ""]
    for folder, cond in RULES:
        conds = cond[1] if cond[0] == "allof" else [cond]
        out.append(":0")
        for c in conds:
            out.append("* ! " + header_regex(c[1]) if c[0] == "not" else "* " + header_regex(c))
        out.append(f"$MD/.{folder}/")
        out.append("")
    return "\n".join(out)


def maildrop_expr(c) -> str:
    kind = c[0]
    if kind == "envelope":
        keys = _alt([_rx(k) for k in c[2]])
        return f"$FROM =~ /^{keys}$/" if c[1] == "all" else f"$FROM =~ /@{keys}$/"
    if kind == "allof":
        return " && ".join(f"({maildrop_expr(x)})" for x in c[1])
    if kind == "anyof":
        return " || ".join(f"({maildrop_expr(x)})" for x in c[1])
    if kind == "not":
        return f"!({maildrop_expr(c[1])})"
    return f"/{header_regex(c)}/"


def render_mailfilter() -> str:
    # Manual mode: `maildrop -f SENDER mailfilter MAILDIR`, the Maildir is $1.
    out = ["# fetchdeliver benchmark rules, maildrop version", 'MD="$1"', 'DEFAULT="$MD/"', ""]
    for folder, cond in RULES:
        out.append(f"if ({maildrop_expr(cond)})\n{{\n  to \"$MD/.{folder}/\"\n}}")
    return "\n".join(out) + "\n"


def render_dovecot_conf(script: Path) -> str:
    # mail_location comes per run with -o; info lines are dropped (the other
    # tools log nothing on success either). mail_fsync stays at its default.
    return f"""# dovecot-lda for the fetchdeliver benchmark (run as nobody)
protocols =
ssl = no
log_path = /dev/stderr
info_log_path = /dev/null
postmaster_address = postmaster@example.org
lda_mailbox_autocreate = yes
protocol lda {{
  mail_plugins = sieve
}}
plugin {{
  sieve = file:{script}
}}
"""


# ----------------------------------------------------------------------------------
# Messages: a seeded, varied set; size log-uniform in 1-50 KB, about a quarter
# multipart (alternative, attachment, forwarded message).

WORDS = ("the of and to in is that for it with as was on be at by this had not are but from or have an they "
         "which one you were all we when there can more if out so what time up about into than them only "
         "other new some could these two may then first any like now my such make over our even most "
         "release build server patch review meeting deadline budget schedule deploy config kernel "
         "package upstream regression benchmark holiday garden weekend dinner photos project draft").split()
FIRST = "Alice Bob Carol Dave Erin Frank Grace Heidi Ivan Judy Mallory Niaj Olivia Peggy Rupert Sybil Trent".split()
LAST = "Smith Jones Garcia Miller Davis Lopez Wilson Moore Taylor Thomas Martin Lee Walker Young King".split()
ENCODED_SUBJECTS = ["=?UTF-8?Q?Gr=C3=BC=C3=9Fe_aus_K=C3=B6ln?=",
                    "=?UTF-8?B?0J/RgNC40LLQtdGCINC40Lcg0JzQvtGB0LrQstGL?=",
                    "=?ISO-8859-1?Q?Caf=E9_au_lait_=E0_midi?=",
                    "Re: =?UTF-8?B?5pel5pys6Kqe44Gu44OG44K544OI?="]
RAW_8BIT_SUBJECTS = ["Déjà vu at the café", "Überraschung zum Geburtstag", "Ελληνικά για αρχάριους"]


class Msg:
    __slots__ = ("n", "msgid", "sender", "rcpt", "raw", "path", "kind", "multipart")

    def __init__(self, n, msgid, sender, rcpt, raw, kind, multipart):
        self.n, self.msgid, self.sender, self.rcpt, self.raw = n, msgid, sender, rcpt, raw
        self.kind, self.multipart, self.path = kind, multipart, None


def _person(rng):
    return rng.choice(FIRST), rng.choice(LAST)


def _addr_header(rng, name, addr):
    r = rng.random()
    if r < 0.7:
        return f"{name} <{addr}>"
    if r < 0.85:
        return f'"{name}" <{addr}>'
    return addr


def _words(rng, n):
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _text_body(rng, size):
    lines, total = [], 0
    while total < size:
        line = _words(rng, rng.randint(4, 13))
        if rng.random() < 0.08:
            line = "> " + line
        if rng.random() < 0.1:
            line = ""
        lines.append(line)
        total += len(line) + 1
    return "\n".join(lines) + "\n"


def _b64_lines(rng, nbytes):
    import base64

    data = base64.b64encode(rng.randbytes(nbytes)).decode()
    return "\n".join(data[i:i + 76] for i in range(0, len(data), 76)) + "\n"


def _category(rng, n):
    """(kind, envelope sender, headers list, subject) for one message."""
    fn, ln = _person(rng)
    name, local = f"{fn} {ln}", f"{fn.lower()}.{ln.lower()}"
    h = []
    r = rng.random()
    to = ME
    subj = _words(rng, rng.randint(2, 7)).capitalize()
    if r < 0.10:
        kind, dom = "python-list", rng.choice(["gmail.example", "mail.example.net", "python.org"])
        lst = rng.choice(["python-dev", "python-ideas"])
        sender = f"{lst}-bounces+me=example.org@python.org"
        frm, to = _addr_header(rng, name, f"{local}@{dom}"), f"{lst}@python.org"
        subj = f"[{lst.capitalize()}] " + ("Re: " if rng.random() < 0.6 else "") + subj
        h += [f"List-Id: {lst.capitalize()} <{lst}.python.org>",
              f"List-Unsubscribe: <mailto:{lst}-leave@python.org>", "Precedence: list"]
    elif r < 0.18:
        kind, lst = "debian-list", rng.choice(["debian-devel", "debian-user"])
        via_forwarder = rng.random() < 0.35
        sender = (f"SRS0=ab12={n % 97}=lists.debian.org=bounce-{lst}@forwarder.example" if via_forwarder
                  else f"bounce-{lst}=me=example.org@lists.debian.org")
        frm, to = _addr_header(rng, name, f"{local}@debian.org"), f"{lst}@lists.debian.org"
        subj = ("Re: " if rng.random() < 0.5 else "") + subj
        h += [f"List-Id: <{lst}.lists.debian.org>", f"List-Post: <mailto:{lst}@lists.debian.org>",
              "Precedence: list"]
    elif r < 0.36:
        kind, sender = "work", f"{local}@corp.example.com"
        frm = _addr_header(rng, name, sender)
        p = rng.random()
        if p < 0.2:
            subj = rng.choice(["Weekly report: week ", "Re: weekly report numbers ", "WEEKLY REPORT "]) + str(n % 52)
        elif p < 0.3:
            subj = "[social] " + rng.choice(["Friday drinks", "Cake in the kitchen", "Football on Sunday"])
        if rng.random() < 0.3:
            h.append("Cc: team@corp.example.com")
    elif r < 0.41:
        kind, sender = "ci", "jenkins@ci.corp.example.com"
        frm = _addr_header(rng, "Jenkins", sender)
        subj = f"[Jenkins] Build #{1000 + n} " + rng.choice(["FAILED", "fixed", "still failing", "unstable"])
    elif r < 0.44:
        kind, sender = "analytics", "reports@analytics.example.net"
        frm = _addr_header(rng, "Analytics", sender)
        subj = "Your traffic summary for " + rng.choice(["Monday", "the week", "March"])
    elif r < 0.47:
        kind, sender = "vendor", f"{local}@vendor.example"
        frm, to = _addr_header(rng, name, sender), "team@corp.example.com"
        h.append(f"Cc: {ME}")
    elif r < 0.53:
        kind, sender = "billing", "billing@cloudhost.example"
        frm = _addr_header(rng, "CloudHost Billing", sender)
        subj = rng.choice([f"Your invoice INV-{n:05d} is ready", f"Invoice for {rng.choice(['March', 'April'])}",
                           "Your monthly usage summary", "Upcoming price change"])
        if rng.random() < 0.4:
            h.append("List-Unsubscribe: <https://cloudhost.example/unsub>")
    elif r < 0.57:
        kind, sender = "shop", f"orders@shop{n % 3}.example"
        frm = _addr_header(rng, "Shop", sender)
        subj = rng.choice(["Your receipt from Shop", "Payment confirmation for order " + str(n),
                           "Your order has shipped", "RECEIPT #" + str(n)])
    elif r < 0.63:
        kind = "alert"
        p = rng.random()
        if p < 0.4:
            sender = "nagios@monitoring.example.net"
            frm = _addr_header(rng, "Nagios", sender)
            subj = f"** PROBLEM Service Alert: db{n % 5}/disk is CRITICAL **"
        elif p < 0.7:
            sender = "uptime@pinger.example"
            frm = _addr_header(rng, "Uptime", sender)
            subj = rng.choice(["[ALERT] ", "Re: [ALERT] ", "[RESOLVED] "]) + f"api{n % 4} is down"
        else:
            sender = "alertmanager@k8s.example.io"
            frm = _addr_header(rng, "Alertmanager", sender)
            subj = f"[FIRING:1] HighLatency ({n % 7})"
            h.append("X-Alertmanager-Status: " + rng.choice(["firing", "resolved"]))
    elif r < 0.69:
        kind = "social"
        dom = rng.choice(["facebookmail.example", "social.example.org", "social.example.org.evil.example"])
        sender = f"notification@{dom}"
        frm = _addr_header(rng, "Social", sender)
        subj = f"{name} commented on your post"
        h.append("List-Unsubscribe: <https://social.example/u>")
    elif r < 0.77:
        kind, sender = "newsletter", f"news@letters{n % 4}.example"
        frm = _addr_header(rng, "The Newsletter", sender)
        p = rng.random()
        if p < 0.4:
            h.append("List-Unsubscribe: <mailto:unsub@letters.example>")
        elif p < 0.7:
            h.append("Precedence: bulk")
        else:
            subj = rng.choice(["Our March newsletter", "NEWSLETTER: what's new", "The weekly newsletter"])
    elif r < 0.81:
        kind = "family"
        if rng.random() < 0.6:
            sender = rng.choice(["mum@family.example", "dad@family.example", "sis@family.example"])
            frm = _addr_header(rng, rng.choice(["Mum", "Dad", "Sis"]), sender)
        else:
            sender = f"{local}@mail.example.net"
            frm, to = _addr_header(rng, name, sender), "family@home.example"
            h.append(f"Cc: {ME}")
    elif r < 0.88:
        kind, sender = "spam", f"{local}{n}@spam{n % 9}.example"
        frm = _addr_header(rng, name, sender)
        p = rng.random()
        if p < 0.5:
            h.append("X-Spam-Flag: YES")
        elif p < 0.8:
            subj = "***SPAM*** " + subj
        else:  # a spam-looking message the filter passed
            h.append("X-Spam-Flag: NO")
            subj = "You have won " + subj
    else:
        kind, sender = "personal", f"{local}@{rng.choice(['mail.example.net', 'gmail.example', 'posteo.example'])}"
        frm = _addr_header(rng, name, sender)
        p = rng.random()
        if p < 0.2:
            subj = rng.choice(ENCODED_SUBJECTS)
        elif p < 0.3:
            subj = rng.choice(RAW_8BIT_SUBJECTS)
        if rng.random() < 0.3:
            h.append("X-Spam-Flag: NO")
    return kind, sender, frm, to, subj, h


def make_messages(count: int, seed: int) -> list[Msg]:
    rng = random.Random(seed)
    out = []
    for n in range(count):
        kind, sender, frm, to, subj, extra = _category(rng, n)
        msgid = f"<bench.{seed}.{n}.{rng.getrandbits(32):08x}@{sender.rsplit('@', 1)[1]}>"
        target = int(1024 * 50 ** rng.random())  # 1 KB .. 50 KB, log-uniform
        day = 1 + n % 28
        hdr = [f"Received: from mx{n % 3}.example.org (mx{n % 3}.example.org [192.0.2.{n % 250 + 1}])\n"
               f"\tby mail.example.org (Postfix) with ESMTPS id {rng.getrandbits(40):010X}\n"
               f"\tfor <{ME}>; Mon, {day} Mar 2025 10:{n % 60:02d}:00 +0000"]
        if rng.random() < 0.6:
            hdr.append(f"Received: from [198.51.100.{n % 200 + 1}] by relay.example.net with ESMTP; "
                       f"Mon, {day} Mar 2025 10:{n % 60:02d}:00 +0000")
        hdr += [f"From: {frm}", f"To: {to}", f"Subject: {subj}",
                f"Date: Mon, {day} Mar 2025 10:{n % 60:02d}:{n % 59:02d} +0000", f"Message-ID: {msgid}"]
        hdr += extra
        if rng.random() < 0.3:
            hdr.append("DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.net; s=s1;\n"
                       f"\tbh={rng.randbytes(24).hex()}=;\n\tb={rng.randbytes(60).hex()}")
        p = rng.random()
        head_len = sum(len(x) + 1 for x in hdr) + 60
        room = max(200, target - head_len)
        multipart = p < 0.27
        if not multipart:
            hdr += ["MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8",
                    "Content-Transfer-Encoding: 8bit"]
            body = _text_body(rng, room)
        else:
            b = f"=_bench_{n}_{rng.getrandbits(32):08x}"
            if p < 0.12:
                hdr += ["MIME-Version: 1.0", f'Content-Type: multipart/alternative; boundary="{b}"']
                text = _text_body(rng, room // 3)
                html = "<html><body>" + "".join(f"<p>{line}</p>\n" for line in
                                                _text_body(rng, room // 2).splitlines()) + "</body></html>\n"
                body = (f"--{b}\nContent-Type: text/plain; charset=utf-8\n\n{text}\n"
                        f"--{b}\nContent-Type: text/html; charset=utf-8\n\n{html}\n--{b}--\n")
            elif p < 0.22:
                hdr += ["MIME-Version: 1.0", f'Content-Type: multipart/mixed; boundary="{b}"']
                text = _text_body(rng, min(room // 4, 1500))
                att = _b64_lines(rng, max(100, (room - len(text)) * 3 // 4))
                body = (f"This is a multi-part message in MIME format.\n\n"
                        f"--{b}\nContent-Type: text/plain; charset=utf-8\n\n{text}\n"
                        f"--{b}\nContent-Type: application/pdf; name=\"doc{n}.pdf\"\n"
                        f"Content-Disposition: attachment; filename=\"doc{n}.pdf\"\n"
                        f"Content-Transfer-Encoding: base64\n\n{att}--{b}--\n")
            else:  # a forwarded message
                # Its inner headers trigger no rule: maildrop matches header patterns
                # against the headers of every MIME part too (maildropfilter(7), "MIME
                # encoding"), Sieve and procmail only against the top-level header.
                hdr += ["MIME-Version: 1.0", f'Content-Type: multipart/mixed; boundary="{b}"']
                fn2, ln2 = _person(rng)
                inner = (f"From: {fn2} {ln2} <{fn2.lower()}@mail.example.net>\nTo: {ME}\n"
                         f"Subject: {_words(rng, 5)}\nDate: Sun, 2 Mar 2025 09:00:00 +0000\n\n"
                         f"{_text_body(rng, room // 2)}")
                body = (f"--{b}\nContent-Type: text/plain; charset=utf-8\n\nSee below.\n\n"
                        f"--{b}\nContent-Type: message/rfc822\n\n{inner}\n--{b}--\n")
        raw = ("\n".join(hdr) + "\n\n" + body).encode("utf-8")
        out.append(Msg(n, msgid, sender, ME, raw, kind, multipart))
    return out


# ----------------------------------------------------------------------------------
# Running one process and timing it.

class Runner:
    """Spawns one delivery process with the message on stdin; wall and CPU time from wait4."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.logs: dict[str, object] = {}

    def run(self, label: str, argv: list[str], stdin_path: Path | None, env: dict, as_nobody: bool):
        log = self.logs.get(label)
        if log is None:
            log = self.logs[label] = open(self.log_dir / f"{label.replace(' ', '_').replace('/', '_')}.log", "ab")
        fd = os.open(stdin_path, os.O_RDONLY) if stdin_path else os.open(os.devnull, os.O_RDONLY)
        kw = {"user": NOBODY_UID, "group": NOBODY_GID, "extra_groups": []} if as_nobody else {}
        try:
            log.flush()
            t0 = time.perf_counter_ns()
            p = subprocess.Popen(argv, stdin=fd, stdout=subprocess.DEVNULL, stderr=log, env=env,
                                 close_fds=True, **kw)
            _, status, ru = os.wait4(p.pid, 0)
            t1 = time.perf_counter_ns()
        finally:
            os.close(fd)
        p.returncode = os.waitstatus_to_exitcode(status)
        return p.returncode, (t1 - t0) / 1e6, (ru.ru_utime + ru.ru_stime) * 1000.0

    def tail(self, label: str, n: int = 12) -> str:
        path = self.log_dir / f"{label.replace(' ', '_').replace('/', '_')}.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def make_maildir(root: Path, owner_nobody: bool = False) -> None:
    for d in [root] + [root / f".{f}" for f in FOLDERS]:
        for sub in ("cur", "new", "tmp"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        if d != root:
            (d / "maildirfolder").touch()
    if owner_nobody:
        chown_tree(root)


def chown_tree(top: Path) -> None:
    os.chown(top, NOBODY_UID, NOBODY_GID)
    for base, dirs, files in os.walk(top):
        for name in dirs + files:
            os.chown(os.path.join(base, name), NOBODY_UID, NOBODY_GID)


def read_folders(root: Path) -> dict[str, list[str]]:
    """Message-ID -> [folders] for every message file under a Maildir++ root."""
    found: dict[str, list[str]] = {}
    dirs = [("INBOX", root)] + [(p.name[1:], p) for p in sorted(root.iterdir())
                                if p.is_dir() and p.name.startswith(".")]
    for folder, d in dirs:
        for sub in ("new", "cur"):
            if not (d / sub).is_dir():
                continue
            for f in (d / sub).iterdir():
                data = f.read_bytes()
                end = data.find(b"\n\n")
                head = data[:end if end >= 0 else len(data)]
                m = re.search(rb"(?im)^message-id:[ \t]*(<[^>\r\n]*>)", head)
                key = m.group(1).decode() if m else f"?{f.name}"
                found.setdefault(key, []).append(folder)
    return found


def tmp_leftovers(root: Path) -> int:
    return sum(len(os.listdir(d / "tmp")) for d in [root] + [p for p in root.iterdir()
                                                            if p.is_dir() and p.name.startswith(".")]
               if (d / "tmp").is_dir())


def byte_exact(root: Path, msgs: list[Msg]) -> int:
    """How many delivered files do NOT end with the original bytes (added top headers are fine)."""
    want = {m.msgid: m.raw for m in msgs}
    bad = 0
    dirs = [root] + [p for p in root.iterdir() if p.is_dir() and p.name.startswith(".")]
    for d in dirs:
        for sub in ("new", "cur"):
            if (d / sub).is_dir():
                for f in (d / sub).iterdir():
                    data = f.read_bytes()
                    m = re.search(rb"(?im)^message-id:[ \t]*(<[^>\r\n]*>)", data[:data.find(b"\n\n")])
                    raw = want.get(m.group(1).decode()) if m else None
                    if raw is None or not data.endswith(raw):
                        bad += 1
    return bad


# ----------------------------------------------------------------------------------
# fsync census: one delivery per tool under strace, which file descriptors were synced.

def fsync_census(label: str, argv: list[str], stdin_path: Path, env: dict, as_nobody: bool,
                 out_dir: Path) -> str:
    strace = shutil.which("strace")
    if not strace:
        return "strace not installed"
    trace = out_dir / f"strace-{label}.txt"
    kw = {"user": NOBODY_UID, "group": NOBODY_GID, "extra_groups": []} if as_nobody else {}
    with open(stdin_path, "rb") as f:
        subprocess.run([strace, "-f", "-qq", "-o", str(trace),
                        "-e", "trace=open,openat,creat,close,fsync,fdatasync,syncfs,sync_file_range,msync,sync",
                        *argv], stdin=f, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, **kw)
    fds: dict[tuple[str, int], str] = {}
    synced: list[str] = []
    try:
        text = trace.read_text(errors="replace")
    except OSError as e:
        return f"strace failed: {e}"
    for line in text.splitlines():
        m = re.match(r'(\d+)\s+(?:open|openat|creat)\((?:AT_FDCWD, )?"([^"]*)".*\)\s*=\s*(\d+)', line)
        if m:
            fds[(m.group(1), int(m.group(3)))] = m.group(2)
            continue
        m = re.match(r"(\d+)\s+(fsync|fdatasync|sync_file_range|syncfs|msync)\((\d+)", line)
        if m:
            path = fds.get((m.group(1), int(m.group(3))), "?")
            synced.append(f"{m.group(2)}({_describe_synced(path)})")
        elif re.match(r"\d+\s+sync\(\)", line):
            synced.append("sync()")
    if not synced:
        return "no fsync at all"
    return f"{len(synced)} call(s): " + ", ".join(synced)


def _describe_synced(path: str) -> str:
    base = os.path.basename(path.rstrip("/"))
    parent = os.path.basename(os.path.dirname(path.rstrip("/")))
    if base in ("new", "cur", "tmp"):
        return f"dir {base}/"
    if parent == "tmp":
        return "message file"
    if os.path.isdir(path):
        return f"dir {base}/"
    return base


# ----------------------------------------------------------------------------------

def pct(data: list[float], q: float) -> float:
    s = sorted(data)
    if not s:
        return float("nan")
    k = max(0, min(len(s) - 1, int(round(q * (len(s) - 1)))))
    return s[k]


def tool_versions() -> dict[str, str]:
    def first(argv, pattern):
        try:
            r = subprocess.run(argv, capture_output=True, text=True)
        except OSError:
            return "?"
        m = re.search(pattern, r.stdout + r.stderr)
        return m.group(1) if m else "?"

    pigeonhole = "?"
    try:
        m = re.search(rb"Pigeonhole Sieve (\d+\.\d+\.\d+)", Path("/usr/lib/dovecot/libdovecot-sieve.so.0").read_bytes())
        pigeonhole = m.group(1).decode() if m else "?"
    except OSError:
        pass
    dovecot = first(["dovecot", "--version"], r"(\S+)")
    return {"procmail": "procmail " + first(["procmail", "-v"], r"procmail v(\S+)"),
            "maildrop": "maildrop " + first(["maildrop", "-v"], r"maildrop (\S+)"),
            "dovecot-lda": f"dovecot-lda {dovecot} + Pigeonhole {pigeonhole}"}


def editable_finders(python: str) -> list[str]:
    """setuptools' editable-install finders (.pth hooks) that every start of `python` imports."""
    r = subprocess.run([python, "-c", "import site, glob, os; print('\\n'.join(p for d in site.getsitepackages() "
                        "for p in glob.glob(os.path.join(d, '__editable__*.pth'))))"],
                       capture_output=True, text=True)
    return [line for line in r.stdout.splitlines() if line]


def make_plain_venv(python: str, where: Path) -> tuple[str, str] | None:
    """A venv that finds fetchdeliver and its dependencies through plain .pth paths.

    Start-up then costs what a regular (non-editable) install costs: no editable
    finder, no other .pth hook of the development venv. Returns (python, fetchdeliver).
    """
    r = subprocess.run([python, "-c", "import site, sys; print(site.getsitepackages()[0]); print(sys._base_executable)"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        return None
    dev_site, base = r.stdout.split()
    if subprocess.run([base, "-m", "venv", "--without-pip", str(where)], capture_output=True).returncode != 0:
        return None
    site = subprocess.run([str(where / "bin" / "python"), "-c", "import site; print(site.getsitepackages()[0])"],
                          capture_output=True, text=True).stdout.strip()
    Path(site, "fetchdeliver-bench.pth").write_text(f"{REPO}\n{dev_site}\n")
    script = where / "bin" / "fetchdeliver"
    script.write_text(f"#!{where / 'bin' / 'python'}\nimport sys\nfrom fetchdeliver.cli import main\n"
                      "if __name__ == '__main__':\n    sys.exit(main())\n")
    script.chmod(0o755)
    return str(where / "bin" / "python"), str(script)


def fetchdeliver_ready(python: str, env: dict) -> str | None:
    """None when the sieve compiler and the Maildir deliverer exist, else what is missing."""
    code = ("import fetchdeliver.sieve as s, fetchdeliver.delivery.maildir as m\n"
            "assert hasattr(s, 'compile_file'), 'fetchdeliver.sieve.compile_file is missing'\n")
    r = subprocess.run([python, "-c", code], env=env, capture_output=True, text=True)
    if r.returncode == 0:
        return None
    return (r.stderr.strip().splitlines() or ["?"])[-1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=2000, help="messages (default 2000)")
    ap.add_argument("--tools", nargs="+", default=list(ALL_TOOLS),
                    help=f"tools to compare (space or comma separated; default: {' '.join(ALL_TOOLS)})")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory and print its path")
    ap.add_argument("--dir", help="parent of the temporary directory (default: $TMPDIR or /tmp); "
                                  "it decides what an fsync costs")
    ap.add_argument("--venv", default=str(REPO / ".venv"), help="virtualenv holding fetchdeliver")
    ap.add_argument("--seed", type=int, default=1, help="seed of the message generator")
    ap.add_argument("--warmup", type=int, default=10, help="untimed runs per tool first (default 10)")
    ap.add_argument("--cold", type=int, default=20,
                    help="fetchdeliver runs with an emptied cache, spread over the run (default 20)")
    ap.add_argument("--no-baselines", action="store_true", help="skip python -c pass and /bin/true")
    ap.add_argument("--no-plain", action="store_true",
                    help="skip the second fetchdeliver/python pair run from a plain venv (see README)")
    args = ap.parse_args(argv)

    tools = [t for item in args.tools for t in item.split(",") if t]
    for t in tools:
        if t not in ALL_TOOLS:
            ap.error(f"unknown tool {t!r}; choose from {', '.join(ALL_TOOLS)}")
    if os.geteuid() != 0:
        print("mda_pipe.py: run as root (dovecot-lda is started as nobody, procmail -f needs a trusted user)",
              file=sys.stderr)
        return 2
    venv = Path(args.venv)
    python, fd_bin = str(venv / "bin" / "python"), str(venv / "bin" / "fetchdeliver")
    missing = []
    for t, exe in (("procmail", "procmail"), ("maildrop", "maildrop"), ("dovecot-lda", DOVECOT_LDA),
                   ("fetchdeliver", fd_bin)):
        if t in tools and not shutil.which(exe):
            missing.append(f"{t} ({exe})")
    if missing:
        print(f"mda_pipe.py: not installed: {', '.join(missing)}; choose others with --tools", file=sys.stderr)
        return 2

    sys.stdout.reconfigure(line_buffering=True)
    top = Path(tempfile.mkdtemp(prefix="mda-bench-", dir=args.dir))
    os.chmod(top, 0o755)
    try:
        return _bench(args, tools, top, python, fd_bin)
    finally:
        if args.keep:
            print(f"\nkept: {top}")
        else:
            shutil.rmtree(top, ignore_errors=True)


def _bench(args, tools, top: Path, python: str, fd_bin: str) -> int:
    t_start = time.monotonic()
    rules_dir, msg_dir, logs = top / "rules", top / "msgs", top / "logs"
    for d in (rules_dir, msg_dir, logs, top / "home", top / "cache", top / "config", top / "pycache"):
        d.mkdir()
    lda_dir = top / "lda"
    lda_dir.mkdir()

    sieve_text = render_sieve()
    (rules_dir / "rules.sieve").write_text(sieve_text)
    (rules_dir / "procmailrc").write_text(render_procmailrc())
    (rules_dir / "mailfilter").write_text(render_mailfilter())
    os.chmod(rules_dir / "mailfilter", 0o600)  # maildrop insists
    (lda_dir / "rules.sieve").write_text(sieve_text)  # Pigeonhole writes rules.svbin next to it
    (lda_dir / "dovecot.conf").write_text(render_dovecot_conf(lda_dir / "rules.sieve"))
    chown_tree(lda_dir)

    msgs = make_messages(args.count, args.seed)
    for m in msgs:
        m.path = msg_dir / f"{m.n:06d}.eml"
        m.path.write_bytes(m.raw)
    sizes = [len(m.raw) for m in msgs]

    # Children get a small clean environment. Python writes its bytecode under
    # pycache/ here (PYTHONPYCACHEPREFIX): nothing is written into the repository,
    # and PYTHONDONTWRITEBYTECODE from a caller cannot make every run recompile.
    base_env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(top / "home"), "LANG": "C.UTF-8"}
    py_env = dict(base_env, XDG_CACHE_HOME=str(top / "cache"), XDG_CONFIG_HOME=str(top / "config"),
                  PYTHONPYCACHEPREFIX=str(top / "pycache"))
    probe = subprocess.run([python, "-c", "import fetchdeliver"], env=py_env, capture_output=True)
    if probe.returncode != 0:  # not installed in the venv: use the checkout
        py_env["PYTHONPATH"] = str(REPO)
    lda_env = dict(base_env, HOME=str(lda_dir))
    if "fetchdeliver" in tools:
        why = fetchdeliver_ready(python, py_env)
        if why:
            print(f"mda_pipe.py: fetchdeliver cannot deliver with rules yet: {why}\n"
                  f"  (run the others with --tools procmail maildrop dovecot-lda)", file=sys.stderr)
            return 2

    rules = rules_dir / "rules.sieve"
    plain = None
    if "fetchdeliver" in tools and not args.no_plain:
        plain = make_plain_venv(python, top / "plainvenv")
        if plain is None:
            print("note: could not build the plain venv, skipping its rows", file=sys.stderr)
    finders = editable_finders(python)

    def command(tool: str, root: Path, m: Msg):
        """argv, env, run as nobody?"""
        if tool == "fetchdeliver (plain venv)":
            return ([plain[1], "deliver", "--maildir", str(root), "--rules", str(rules),
                     "-f", m.sender, "-a", m.rcpt], py_env, False)
        if tool == "fetchdeliver":
            return ([fd_bin, "deliver", "--maildir", str(root), "--rules", str(rules),
                     "-f", m.sender, "-a", m.rcpt], py_env, False)
        if tool == "procmail":
            return (["procmail", "-f", m.sender, str(rules_dir / "procmailrc"), f"MD={root}"], base_env, False)
        if tool == "maildrop":
            return (["maildrop", "-f", m.sender, str(rules_dir / "mailfilter"), str(root)], base_env, False)
        if tool == "dovecot-lda":
            return ([DOVECOT_LDA, "-c", str(lda_dir / "dovecot.conf"), "-o", f"mail_location=maildir:{root}",
                     "-f", m.sender, "-a", m.rcpt], lda_env, True)
        raise ValueError(tool)

    baselines = []
    if not args.no_baselines:
        baselines = [("python -c pass", [python, "-c", "pass"], py_env, False),
                     ("python -I -S -c pass", [python, "-I", "-S", "-c", "pass"], py_env, False),
                     ("/bin/true (spawn, root)", ["/bin/true"], base_env, False),
                     ("/bin/true (spawn, as nobody)", ["/bin/true"], base_env, True)]

        if plain:
            baselines.insert(2, ("python -c pass (plain venv)", [plain[0], "-c", "pass"], py_env, False))
    if plain:
        tools = tools + ["fetchdeliver (plain venv)"]

    runner = Runner(logs)
    roots = {t: top / "out" / SHORT.get(t, t) for t in tools}
    for t in tools:
        make_maildir(roots[t], owner_nobody=(t == "dovecot-lda"))

    failures: list[str] = []

    def check(label, rc, m):
        if rc != 0:
            failures.append(f"{label} exited {rc} on message {m.n} ({m.path}):\n{runner.tail(label)}")

    # Warm-up: page cache, bytecode under pycache/, the Sieve caches of both Sieve tools.
    warm = min(args.warmup, len(msgs))
    for t in tools:
        root = top / "warmup" / SHORT.get(t, t)
        make_maildir(root, owner_nobody=(t == "dovecot-lda"))
        for m in msgs[:warm]:
            argv, env, nobody = command(t, root, m)
            rc, _, _ = runner.run(t, argv, m.path, env, nobody)
            check(t, rc, m)
    for label, argv, env, nobody in baselines:
        for _ in range(warm):
            runner.run(label, argv, None, env, nobody)
    if failures:
        print("\n\n".join(failures[:4]), file=sys.stderr)
        print("\nmda_pipe.py: FAILED during warm-up", file=sys.stderr)
        return 1

    cache_dir = top / "cache"
    cold_root = top / "cold" / "fetchdeliver"
    cold_every = max(1, len(msgs) // args.cold) if args.cold > 0 and "fetchdeliver" in tools else 0
    if cold_every:
        make_maildir(cold_root)
    cache_seen: list[int] = []

    wall: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    labels = list(tools) + [b[0] for b in baselines]
    n_labels = len(labels)
    last_report = time.monotonic()
    for i, m in enumerate(msgs):
        order = labels[i % n_labels:] + labels[:i % n_labels]
        for label in order:
            if label in tools:
                argv, env, nobody = command(label, roots[label], m)
                rc, w, c = runner.run(label, argv, m.path, env, nobody)
                check(label, rc, m)
            else:
                _, argv, env, nobody = next(b for b in baselines if b[0] == label)
                rc, w, c = runner.run(label, argv, None, env, nobody)
            wall.setdefault(label, []).append(w)
            cpu.setdefault(label, []).append(c)
        if cold_every and i % cold_every == cold_every // 2:
            shutil.rmtree(cache_dir, ignore_errors=True)
            cache_dir.mkdir()
            argv, env, nobody = command("fetchdeliver", cold_root, m)
            label = "fetchdeliver (cold cache)"
            rc, w, c = runner.run(label, argv, m.path, env, nobody)
            check(label, rc, m)
            wall.setdefault(label, []).append(w)
            cpu.setdefault(label, []).append(c)
            cache_seen.append(sum(len(f) for _, _, f in os.walk(cache_dir)))
        if len(failures) > 20:
            break
        if time.monotonic() - last_report > 15:
            last_report = time.monotonic()
            print(f"  ... {i + 1}/{len(msgs)} messages", file=sys.stderr, flush=True)

    census = {}
    (logs / "census").mkdir()
    os.chmod(logs / "census", 0o777)  # strace runs as the tool's user
    for t in tools:
        # Into the warmed-up Maildir, again the first message: its folder exists and
        # Dovecot has its index files, as in steady state.
        argv, env, nobody = command(t, top / "warmup" / SHORT.get(t, t), msgs[0])
        census[t] = fsync_census(SHORT.get(t, t), argv, msgs[0].path, env, nobody, logs / "census")

    # ---- report -------------------------------------------------------------------
    vers = tool_versions()
    pyver = subprocess.run([python, "-c", "import sys; print(sys.version.split()[0])"],
                           capture_output=True, text=True, env=py_env).stdout.strip()
    fstype = subprocess.run(["stat", "-f", "-c", "%T", str(top)], capture_output=True, text=True).stdout.strip()
    n_multi = sum(m.multipart for m in msgs)
    done = len(wall.get(labels[0], []))
    print(f"\nMDA pipe benchmark: {done} messages x {len(tools)} tools, one process per message, "
          f"rules: {len(RULES)} rules into {len(FOLDERS)} folders (+ INBOX)")
    print(f"messages: {min(sizes) / 1024:.1f}-{max(sizes) / 1024:.1f} KB (median {statistics.median(sizes) / 1024:.1f}"
          f" KB), {n_multi} multipart, seed {args.seed}; "
          f"dir {top} ({fstype}), {os.cpu_count()} CPUs, Python {pyver}")
    print(f"warm-up: {warm} untimed runs per tool; wall time = fork/exec to exit as seen by the "
          f"parent (includes spawn); cpu = user+sys of the child\n")

    ours = wall.get("fetchdeliver")
    ours_med = statistics.median(ours) if ours else None
    hdr = f"{'tool':<48}{'runs':>6}{'median ms':>11}{'p90 ms':>9}{'min ms':>9}{'cpu ms':>9}  fetchdeliver/it"
    print(hdr)
    print("-" * len(hdr))
    order = (["fetchdeliver", "fetchdeliver (cold cache)", "fetchdeliver (plain venv)"]
             + [t for t in tools if not t.startswith("fetchdeliver")] + [b[0] for b in baselines])
    display = {"fetchdeliver": "fetchdeliver (cached Sieve)", "fetchdeliver (cold cache)": "fetchdeliver (empty Sieve cache)",
             "fetchdeliver (plain venv)": "fetchdeliver (cached, plain venv)"}
    for label in order:
        data = wall.get(label)
        if not data:
            continue
        med = statistics.median(data)
        ratio = f"{ours_med / med:8.2f}x" if ours_med and label != "fetchdeliver" else ""
        print(f"{display.get(label, vers.get(label, label)):<48}{len(data):>6}{med:>11.2f}{pct(data, 0.9):>9.2f}"
              f"{min(data):>9.2f}{statistics.median(cpu[label]):>9.2f}  {ratio}")

    def med(label):
        return statistics.median(wall[label]) if wall.get(label) else None

    print()
    if ours and med("python -c pass"):
        print(f"fetchdeliver / python -c pass               = {ours_med / med('python -c pass'):5.2f}x  "
              f"(goal <= 2.5x; same venv, its .pth hooks included in both)")
    if ours and med("python -I -S -c pass"):
        print(f"fetchdeliver / python -I -S -c pass         = {ours_med / med('python -I -S -c pass'):5.2f}x")
    if med("fetchdeliver (plain venv)") and med("python -c pass (plain venv)"):
        print(f"plain venv: fetchdeliver / python -c pass   = "
              f"{med('fetchdeliver (plain venv)') / med('python -c pass (plain venv)'):5.2f}x  "
              f"({med('fetchdeliver (plain venv)') - med('python -c pass (plain venv)'):.1f} ms above the bare interpreter)")
    if med("fetchdeliver (cold cache)") and ours:
        cold = med("fetchdeliver (cold cache)")
        print(f"empty Sieve cache / cached                  = {cold / ours_med:5.2f}x  "
              f"({cold - ours_med:+.1f} ms to compile the 20-rule script)")
        if cache_seen and not any(cache_seen):
            print("WARNING: fetchdeliver wrote nothing under XDG_CACHE_HOME: the 'cached' runs compile too")
    if finders and "fetchdeliver" in tools:
        print(f"note: {python} imports setuptools' editable finder at every start "
              f"({', '.join(os.path.basename(f) for f in finders)}); a regular install does not"
              + (": see the plain-venv rows" if plain else ""))
    print("\nfsync per delivery (one message under strace):")
    for t in tools:
        print(f"  {SHORT.get(t, t):<14}{census[t]}")

    # ---- routing ------------------------------------------------------------------
    placed = {t: read_folders(roots[t]) for t in tools}
    names = ["INBOX"] + FOLDERS
    extra = sorted({f for t in tools for fs in placed[t].values() for f in fs} - set(names))
    names += extra
    cols = [SHORT.get(t, t) for t in tools]
    w = max(12, *(len(c) + 2 for c in cols))
    print("\nrouting: messages per folder")
    print(f"{'folder':<14}" + "".join(f"{c:>{w}}" for c in cols))
    counts = {t: {} for t in tools}
    for t in tools:
        for fs in placed[t].values():
            for f in fs:
                counts[t][f] = counts[t].get(f, 0) + 1
    for f in names:
        print(f"{f:<14}" + "".join(f"{counts[t].get(f, 0):>{w}}" for t in tools))
    print(f"{'total':<14}" + "".join(f"{sum(counts[t].values()):>{w}}" for t in tools))

    problems = list(failures)
    expected = {m.msgid for m in msgs[:done]}
    for t in tools:
        got = placed[t]
        lost = expected - set(got)
        dup = [k for k, fs in got.items() if len(fs) > 1]
        alien = set(got) - expected
        if lost:
            problems.append(f"{t}: {len(lost)} message(s) missing, e.g. {sorted(lost)[:3]}")
        if dup:
            problems.append(f"{t}: {len(dup)} message(s) delivered more than once, e.g. {dup[:3]}")
        if alien:
            problems.append(f"{t}: {len(alien)} unexpected file(s), e.g. {sorted(alien)[:3]}")
        left = tmp_leftovers(roots[t])
        if left:
            problems.append(f"{t}: {left} file(s) left in tmp/")
    if len(tools) > 1:
        differ = [m for m in msgs[:done]
                  if len({tuple(placed[t].get(m.msgid, ["(missing)"])) for t in tools}) > 1]
        if differ:
            problems.append(f"routing differs for {len(differ)} message(s):")
            for m in differ[:8]:
                where = ", ".join(f"{t}={'/'.join(placed[t].get(m.msgid, ['(missing)']))}" for t in tools)
                problems.append(f"  #{m.n} {m.path.name} ({m.kind}, envelope from {m.sender}): {where}")
    print()
    for t in tools:
        bad = byte_exact(roots[t], msgs[:done])
        print(f"byte-exact: {SHORT.get(t, t):<14}{done - bad}/{done} delivered files end with the original bytes")
        if bad and t.startswith("fetchdeliver"):
            problems.append(f"{t}: {bad} delivered file(s) are not byte-exact")
    print(f"\nwall time of the whole benchmark: {time.monotonic() - t_start:.0f} s")
    if problems:
        print("\n" + "\n".join(problems), file=sys.stderr)
        print("\nmda_pipe.py: FAILED (see above)", file=sys.stderr)
        return 1
    print("routing agrees across all tools: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
