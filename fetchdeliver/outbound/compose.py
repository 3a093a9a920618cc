"""The mail we write ourselves: vacation replies, notify mailto, delivery status notifications.

Plus the rules that keep automatic mail from doing harm: no auto-reply to
lists, bulk mail, other robots or the null sender (RFC 3834, RFC 5230), and
no redirect that would loop (Delivered-To / X-Loop).
"""

from __future__ import annotations

import hashlib
import os
import re
from email.utils import formatdate, getaddresses, make_msgid

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from fetchdeliver.actions import Notify, Vacation
    from fetchdeliver.message import Message

ROBOT_LOCALPARTS = ("mailer-daemon", "listserv", "majordomo", "postmaster", "noreply", "no-reply")
LIST_HEADERS = ("list-id", "list-post", "list-help", "list-subscribe", "list-unsubscribe", "list-owner",
                "list-archive")
MAX_DELIVERED_TO = 20


def bare(addr: str) -> str:
    return (addr or "").strip().strip("<>").strip().lower()


def local_address(message: "Message", hostname: str) -> str:
    """The address the message was delivered to (for From: of replies and X-Loop)."""
    for a in (message.original_recipient, *(message.recipients or [])):
        if a:
            return bare(a)
    return f"fetchdeliver@{hostname}"


def _header_addresses(message: "Message", *names: str) -> list[str]:
    values = []
    for n in names:
        values.extend(message.get_all(n, decode=True) or [])
    return [bare(a) for _name, a in getaddresses(values) if a]


# -- redirect --------------------------------------------------------------------------------

def redirect_loop(message: "Message", target: str, local: str) -> str | None:
    """Why redirecting `message` to `target` would loop, or None."""
    t = bare(target)
    delivered = [bare(v) for v in (message.get_all("Delivered-To") or [])]
    if t in delivered:
        return f"the message was already delivered to {t} (Delivered-To)"
    loops = [bare(v) for v in (message.get_all("X-Loop") or [])]
    if t in loops or local in loops:
        return f"the message was already redirected by {local if local in loops else t} (X-Loop)"
    if len(delivered) > MAX_DELIVERED_TO:
        return f"{len(delivered)} Delivered-To headers: a forwarding loop"
    return None


def redirected_from_loop(message: "Message", *users: str | None) -> bool:
    """Pigeonhole's loop check: the message already carries ``X-Sieve-Redirected-From`` with one of
    the user's addresses (sieve_user_email, the final recipient), so this user redirected it before."""
    own = {bare(u) for u in users if u and bare(u)}
    values = message.get_all("X-Sieve-Redirected-From", decode=True) or []
    return any(bare(a) in own for _n, a in getaddresses(values) if a)


def redirect_envelope_from(setting: str | None, sender: str, *, final: str, original: str,
                           user_email: str | None) -> str:
    """The envelope sender of a redirect, as Pigeonhole's ``sieve_redirect_envelope_from``:
    "sender" (the default), "recipient" (final recipient), "orig_recipient", "user_email" (falling
    back to the final recipient) or an explicit "<address>" ("<>" for the null sender). A message
    from the null sender is always redirected from the null sender (RFC 5321 4.5.5: no bounces to
    bounces)."""
    if not bare(sender):
        return ""
    value = (setting or "sender").strip()
    kind = value.lower()
    if kind == "sender" or not value:
        return sender
    if kind == "recipient":
        return bare(final)
    if kind == "orig_recipient":
        return bare(original or final)
    if kind == "user_email":
        return bare(user_email or final)
    return bare(value)


def redirect_raw(message: "Message", local: str, redirected_from: str | None = None) -> bytes:
    """The bytes to send on: our Return-Path removed (it belongs to the final delivery), X-Loop added;
    with `redirected_from`, also Pigeonhole's ``X-Sieve-Redirected-From`` (the user's address, which
    its loop check reads back: see redirected_from_loop)."""
    raw = message.raw
    if raw[:12].lower() == b"return-path:":
        nl = raw.find(b"\n")
        raw = raw[nl + 1:] if nl >= 0 else b""
    eol = b"\r\n" if b"\r\n" in raw[:4096] else b"\n"
    added = f"X-Loop: {local}".encode("utf-8", "surrogateescape") + eol
    if redirected_from:
        added = f"X-Sieve-Redirected-From: {redirected_from}".encode("utf-8", "surrogateescape") + eol + added
    return added + raw


# -- vacation (RFC 5230) -----------------------------------------------------------------------

def auto_reply_refusal(message: "Message", own: list[str]) -> str | None:
    """Why no automatic reply may go to this message's sender, or None (RFC 3834 / RFC 5230)."""
    sender = bare(message.sender)
    if not sender:
        return "the sender is the null address <>"
    localpart = sender.split("@", 1)[0]
    if localpart in ROBOT_LOCALPARTS or localpart.startswith("owner-") or localpart.endswith("-request"):
        return f"the sender {sender} is a mailing list or mailer daemon"
    if sender in own:
        return "the sender is the recipient itself"
    auto = (message.get("Auto-Submitted") or "no").strip().lower()
    if not auto.startswith("no"):
        return f"the message is Auto-Submitted: {auto}"
    prec = (message.get("Precedence") or "").strip().lower()
    if prec in ("bulk", "list", "junk"):
        return f"the message has Precedence: {prec}"
    for h in LIST_HEADERS:
        if message.get(h) is not None:
            return f"the message came from a mailing list ({h})"
    suppress = (message.get("X-Auto-Response-Suppress") or "").lower()
    if "all" in suppress or "oof" in suppress:
        return "the message asks for no automatic replies (X-Auto-Response-Suppress)"
    return None


def _user_addresses(message: "Message", local: str, settings: "Mapping[str, Any] | None") -> list[str]:
    """The user's own addresses before :addresses. Without `settings` (the outbound queue), the
    address the message was delivered to; with them, Pigeonhole's rules: the final recipient,
    ``user_email`` when set, and the original recipient only with
    ``vacation_use_original_recipient``."""
    if settings is None:
        return [local]
    final = bare((message.recipients or [local])[0] or local)
    own = [final]
    if settings.get("user_email"):
        own.insert(0, bare(settings["user_email"]))
    orig = bare(message.original_recipient or "")
    if orig and settings.get("vacation_use_original_recipient"):
        own.append(orig)
    return own


def vacation_refusal(action: "Vacation", message: "Message", local: str,
                     settings: "Mapping[str, Any] | None" = None) -> str | None:
    """Why no vacation reply may be sent for `message` (RFC 5230 4.5), or None: the
    auto-reply rules, then the user's addresses (recipient, :addresses, :from) must be in
    To/Cc/Bcc/Resent-* (unless ``vacation_dont_check_recipient``). `settings`: the [sieve]
    options (see _user_addresses)."""
    own = [*_user_addresses(message, local, settings), *(bare(a) for a in action.addresses)]
    if action.from_:
        own += [bare(a) for _n, a in getaddresses([action.from_]) if a]
    why = auto_reply_refusal(message, own)
    if why is None and settings is not None and settings.get("vacation_dont_check_recipient"):
        return None
    if why is None:
        to = _header_addresses(message, "To", "Cc", "Bcc", "Resent-To", "Resent-Cc", "Resent-Bcc")
        if not any(a in to for a in own):
            why = "none of the recipient's addresses is in To/Cc/Bcc"
    return why


def vacation_key(action: "Vacation", local: str, sender: str) -> str:
    """The memory key: one reply per (recipient, sender, handle) within the period."""
    handle = action.handle
    if handle is None:  # RFC 5230 4.2: derived from :subject, :from, :mime and the reason
        handle = hashlib.sha256(repr((action.subject, action.from_, action.mime, action.reason))
                                .encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return f"{bare(local)}\0{bare(sender)}\0{handle}"


def _owner_address(action: "Vacation", message: "Message", local: str,
                   settings: "Mapping[str, Any] | None" = None) -> str:
    """RFC 5230 5.4: the From is "the address of the owner of the Sieve script": the recipient,
    or, when the message was addressed to another of the owner's addresses (:addresses), that one."""
    own = [*_user_addresses(message, local, settings), *(bare(a) for a in action.addresses)]
    if settings is not None:
        local = own[0]
    to = _header_addresses(message, "To", "Cc", "Bcc", "Resent-To", "Resent-Cc", "Resent-Bcc")
    for a in own:
        if a and a in to:
            return a
    return local


_ATEXT = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+")
MAX_SUBJECT_CODEPOINTS = 256  # Pigeonhole's sieve_vacation_max_subject_codepoints


def _mailbox(name: str, addr: str) -> str:
    """`"Name" <addr>` (the name quoted unless it is one atom), or `<addr>`."""
    if not name:
        return f"<{addr}>"
    if not _ATEXT.fullmatch(name):
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{name} <{addr}>"


def vacation_recipient(message: "Message", settings: "Mapping[str, Any] | None" = None) -> tuple[str, str]:
    """(envelope recipient, To header) of a vacation reply, as Pigeonhole: the reply goes to the
    envelope sender (RFC 5230 4.6), and its To shows the Sender/Resent-From/From mailbox (with its
    display name) that has that address, else `<sender>`. With ``vacation_to_header_ignore_envelope``
    the first of those header addresses is used instead of the envelope sender (for SRS senders)."""
    sender = bare(message.sender)
    found: list[tuple[str, str]] = []
    for h in ("Sender", "Resent-From", "From"):
        found += [(n, a) for n, a in getaddresses(message.get_all(h, decode=True) or []) if a]
    if settings is not None and settings.get("vacation_to_header_ignore_envelope") and found:
        name, addr = found[0]
        return bare(addr), _mailbox(name, addr.strip("<>"))
    for name, addr in found:
        if bare(addr) == sender:
            return sender, _mailbox(name, addr.strip("<>"))
    return sender, _mailbox("", message.sender.strip().strip("<>"))


def vacation_envelope_from(message: "Message", settings: "Mapping[str, Any] | None" = None) -> str:
    """The reply's envelope sender: the null sender (RFC 5230 5.1 suggests it), or with Pigeonhole's
    ``vacation_send_from_recipient`` the recipient (the original one with
    ``vacation_use_original_recipient``)."""
    if settings is None or not settings.get("vacation_send_from_recipient"):
        return ""
    final = (message.recipients or [""])[0] or ""
    if settings.get("vacation_use_original_recipient") and message.original_recipient:
        return bare(message.original_recipient)
    return bare(final)


def _limit_subject(subject: str, settings: "Mapping[str, Any] | None") -> str:
    """At most ``vacation_max_subject_codepoints`` characters (default 256), the cut marked with an
    ellipsis, as Pigeonhole does; the folding of a long original subject is undone first."""
    subject = " ".join(subject.split())
    limit = MAX_SUBJECT_CODEPOINTS
    if settings is not None and settings.get("vacation_max_subject_codepoints") not in (None, ""):
        limit = int(settings["vacation_max_subject_codepoints"])
    if limit > 0 and len(subject) > limit:
        subject = subject[:limit - 1] + "\u2026"
    return subject


def vacation_reply(action: "Vacation", message: "Message", local: str, hostname: str,
                   settings: "Mapping[str, Any] | None" = None) -> bytes:
    orig_subject = message.get("Subject") or ""
    subject = action.subject if action.subject is not None else f"Auto: {orig_subject}".rstrip()
    subject = _limit_subject(subject, settings)
    from_ = action.from_ or _owner_address(action, message, local, settings)
    headers = [("From", from_), ("To", vacation_recipient(message, settings)[1]), ("Subject", subject),
               ("Date", formatdate(localtime=True)), ("Message-ID", make_msgid(domain=hostname)),
               ("Auto-Submitted", "auto-replied (vacation)"), ("Precedence", "bulk")]
    mid = (message.get("Message-ID") or "").strip()
    if mid:
        refs = (message.get("References") or "").split()
        headers += [("In-Reply-To", mid), ("References", " ".join([*refs, mid]))]
    headers.append(("MIME-Version", "1.0"))
    if action.mime:
        # :mime: the reason is a MIME entity (its own Content-Type and body)
        body = action.reason.replace("\r\n", "\n")
        return _render(headers, None) + body.encode("utf-8", "surrogateescape")
    return _render(headers, action.reason)


# -- notify mailto (RFC 5436) ------------------------------------------------------------------

def _mailto_mailboxes(value: str) -> list[tuple[str, str]]:
    """The (display name, address) pairs of a decoded to=/cc= value or URI path; RFC 2047 words in
    display names decoded (RFC 5436 2.3 lets the URI carry them)."""
    from email.header import decode_header, make_header

    out = []
    for name, addr in getaddresses([value]):
        if not bare(addr):
            continue
        if "=?" in name:
            try:
                name = str(make_header(decode_header(name)))
            except (ValueError, LookupError):
                pass
        out.append((name, addr.strip("<>")))
    return out


def parse_mailto(uri: str) -> tuple[list[str], dict[str, str]]:
    """'mailto:a@b,c@d?cc=e@f&subject=x&body=y' -> (recipients, {lower-cased header: value}).

    The recipients are each address once (To before Cc); the fields also hold "to" and "cc" as
    lists of mailboxes with their display names (decoded), joined by NUL, for the headers."""
    from urllib.parse import unquote

    if not uri.lower().startswith("mailto:"):
        raise ValueError(f"not a mailto: URI: {uri!r}")
    rest = uri[7:]
    path, _, query = rest.partition("?")
    to = [m for a in path.split(",") if a.strip() for m in _mailto_mailboxes(unquote(a))]
    cc: list[tuple[str, str]] = []
    headers: dict[str, str] = {}
    for pair in query.split("&") if query else []:
        name, _, value = pair.partition("=")
        name, value = unquote(name).lower(), unquote(value)
        if name in ("to", "cc"):
            (to if name == "to" else cc).extend(_mailto_mailboxes(value))
        elif name in ("subject", "body"):
            headers[name] = value
        # every other header (from, auto-submitted, ...) is ignored, as RFC 5436 2.2 requires
    seen: set[str] = set()
    kept: dict[str, list[tuple[str, str]]] = {"to": [], "cc": []}
    for kind, boxes in (("to", to), ("cc", cc)):
        for n, a in boxes:
            if bare(a) not in seen:  # a recipient named twice gets one message (RFC 5436 2.3)
                seen.add(bare(a))
                kept[kind].append((n, a))
    for kind, boxes in kept.items():
        if boxes:
            headers[kind] = "\0".join(_mailbox_2047(n, a) for n, a in boxes)
    return [bare(a) for boxes in kept.values() for _n, a in boxes], headers


def _mailbox_2047(name: str, addr: str) -> str:
    """A mailbox for a header: a non-ASCII display name as RFC 2047 words, an address alone bare."""
    from email.utils import formataddr

    if not name:
        return addr
    if all(ord(c) < 128 for c in name):
        return _mailbox(name, addr)
    return formataddr((name, addr), charset="utf-8")


def notify_envelope_from(setting: str | None, action_from: str | None, sender: str, *, final: str,
                         original: str, user_email: str | None, hostname: str) -> str:
    """The envelope sender of a mailto notification, as Pigeonhole's
    ``sieve_notify_mailto_envelope_from``: "postmaster" (the default: the :from address when the
    script gives one, else postmaster@hostname), or "sender", "recipient", "orig_recipient",
    "user_email", "<address>" as for redirects. Mail from the null sender notifies from it too."""
    if not bare(sender):
        return ""
    value = (setting or "postmaster").strip()
    if value.lower() == "postmaster":
        if action_from:
            addrs = [a for _n, a in getaddresses([action_from]) if a]
            if addrs:
                return bare(addrs[0])
        return f"postmaster@{hostname}"
    return redirect_envelope_from(value, sender, final=final, original=original, user_email=user_email)


def notify_refusal(message: "Message") -> str | None:
    auto = (message.get("Auto-Submitted") or "no").strip().lower()
    if not auto.startswith("no"):
        return f"the message is Auto-Submitted: {auto} (RFC 5436 2.7)"
    return None


def notify_mail(action: "Notify", message: "Message", local: str, hostname: str, to: list[str],
                fields: dict[str, str]) -> bytes:
    orig_from = message.get("From") or message.sender or "unknown sender"
    orig_subject = message.get("Subject") or "(no subject)"
    subject = fields.get("subject") or action.message or f"[SIEVE] New mail from {orig_from}: {orig_subject}"
    body = fields.get("body")
    if body is None:
        body = f"{action.message}\n\n" if action.message else ""
        body += f"From: {orig_from}\nSubject: {orig_subject}\n"
    to_header = ", ".join(fields["to"].split("\0")) if fields.get("to") else ", ".join(to)
    headers = [("From", action.from_ or local), ("To", to_header)]
    if fields.get("cc"):
        headers.append(("Cc", ", ".join(fields["cc"].split("\0"))))
    headers += [("Subject", subject),
                ("Date", formatdate(localtime=True)), ("Message-ID", make_msgid(domain=hostname)),
                ("Auto-Submitted", getattr(action, "auto_submitted", "auto-notified")),
                ("X-Sieve", "fetchdeliver")]  # which Sieve engine made it (as Pigeonhole's "X-Sieve")
    # RFC 5436 2.5: :importance as the usual priority headers (Pigeonhole writes both, "normal" too)
    priority = {"1": ("1 (Highest)", "High"), "3": ("5 (Lowest)", "Low")}.get(
        str(action.importance or "2"), ("3 (Normal)", "Normal"))
    headers += [("X-Priority", priority[0]), ("Importance", priority[1].lower())]
    headers.append(("MIME-Version", "1.0"))
    return _render(headers, body)


# -- feedback reports (RFC 5965, vnd.dovecot.report) ------------------------------------------

def feedback_report(action, message: "Message", local: str, hostname: str) -> bytes:
    """A multipart/report; report-type=feedback-report about `message` (RFC 5965)."""
    boundary = f"{os.urandom(12).hex()}/{hostname}"
    from_ = action.from_ or f"postmaster@{hostname}"
    subject = message.get("Subject") or ""
    headers = [("From", from_), ("To", action.address),
               ("Subject", f"Report: {subject}".rstrip()), ("Date", formatdate(localtime=True)),
               ("Message-ID", make_msgid(domain=hostname)), ("Auto-Submitted", "auto-generated (report)"),
               ("MIME-Version", "1.0"),
               ("Content-Type", f'multipart/report; report-type=feedback-report; boundary="{boundary}"')]
    text = action.message.replace("\r\n", "\n")
    if not text.endswith("\n"):
        text += "\n"
    fields = ["Version: 1", f"Feedback-Type: {action.feedback_type}", "User-Agent: fetchdeliver"]
    if message.sender:
        fields.append(f"Original-Mail-From: <{message.sender}>")
    for rcpt in message.recipients or [local]:
        fields.append(f"Original-Rcpt-To: <{rcpt}>")
    if getattr(action, "reporting_user", None):  # the user's address, Pigeonhole's extension field
        fields.append(f"Dovecot-Reporting-User: <{action.reporting_user}>")
    original = message.raw
    if action.headers_only:
        from fetchdeliver.message import header_block

        original = header_block(original) + b"\n"
    eol_fix = original.replace(b"\r\n", b"\n")
    b = boundary.encode("ascii")
    text_part = _render([("Content-Type", "text/plain; charset=utf-8")], text)
    out = (_render_headers(headers) + b"\n"
           + b"This is a feedback report (RFC 5965).\n\n--" + b + b"\n" + text_part
           + b"\n--" + b + b"\nContent-Type: message/feedback-report\n\n"
           + "\n".join(fields).encode("utf-8", "replace") + b"\n"
           + b"\n--" + b + b"\nContent-Type: "
           + (b"text/rfc822-headers" if action.headers_only else b"message/rfc822") + b"\n\n"
           + eol_fix + (b"" if eol_fix.endswith(b"\n") else b"\n") + b"\n--" + b + b"--\n")
    return out


# -- DSN (RFC 3464) ------------------------------------------------------------------------------

def _status_of(error: str, permanent: bool) -> str:
    # The last answer's enhanced code, as Postfix reports it (a 4.x.x one for mail that expired).
    m = re.search(r"\b([45])\.(\d{1,3})\.(\d{1,3})\b", error or "")
    if m:
        return m.group(0)
    return "5.0.0" if permanent else "4.0.0"


def dsn(*, action: str, sender: str, recipient: str, error: str, original: bytes, hostname: str,
        arrival: float, retry_until: float | None = None) -> bytes:
    """A multipart/report DSN; `action` is "failed" or "delayed"."""
    permanent = action == "failed"
    boundary = f"{os.urandom(12).hex()}/{hostname}"
    if permanent:
        subject = "Undelivered Mail Returned to Sender"
        text = (f"This is the mail system at host {hostname}.\n\n"
                f"Your message could not be delivered to <{recipient}> and has been given up.\n\n"
                f"The last answer was:\n    {error}\n")
    else:
        subject = "Delayed Mail (still being retried)"
        text = (f"This is the mail system at host {hostname}.\n\n"
                f"Your message to <{recipient}> has not been delivered yet. It is still being retried"
                + (f" until {formatdate(retry_until, localtime=True)}" if retry_until else "")
                + f"; you do not need to send it again.\n\nThe last answer was:\n    {error}\n")
    status = _status_of(error, permanent)
    diag = " ".join(error.split())[:900]
    report = [f"Reporting-MTA: dns; {hostname}", f"Arrival-Date: {formatdate(arrival, localtime=True)}", "",
              f"Final-Recipient: rfc822; {recipient}", f"Original-Recipient: rfc822; {recipient}",
              f"Action: {action}", f"Status: {status}"]
    if diag:
        report.append(f"Diagnostic-Code: smtp; {diag}")
    report.append(f"Last-Attempt-Date: {formatdate(localtime=True)}")
    if retry_until and not permanent:
        report.append(f"Will-Retry-Until: {formatdate(retry_until, localtime=True)}")
    from fetchdeliver.message import header_block

    orig_headers = header_block(original).replace(b"\r\n", b"\n")
    headers = [("From", f"Mail Delivery System <MAILER-DAEMON@{hostname}>"), ("To", f"<{sender}>"),
               ("Subject", subject), ("Date", formatdate(localtime=True)),
               ("Message-ID", make_msgid(domain=hostname)), ("Auto-Submitted", "auto-replied"),
               ("MIME-Version", "1.0"),
               ("Content-Type", f'multipart/report; report-type=delivery-status;\n\tboundary="{boundary}"')]
    out = _render_headers(headers)
    out += (f"\nThis is a MIME-encapsulated message.\n\n--{boundary}\n"
            "Content-Description: Notification\nContent-Type: text/plain; charset=utf-8\n"
            "Content-Transfer-Encoding: 8bit\n\n").encode() + text.encode("utf-8", "replace")
    out += (f"\n--{boundary}\nContent-Description: Delivery report\n"
            f"Content-Type: message/delivery-status\n\n").encode() + \
        ("\n".join(report) + "\n").encode("utf-8", "replace")
    out += (f"\n--{boundary}\nContent-Description: Undelivered Message Headers\n"
            "Content-Type: text/rfc822-headers\n\n").encode() + orig_headers.rstrip(b"\n") + b"\n"
    out += f"\n--{boundary}--\n".encode()
    return out


# -- rendering -------------------------------------------------------------------------------------

def _encode_header(name: str, value: str) -> str:
    from email.header import Header

    value = " ".join(str(value).split()) if name.lower() != "content-type" else value
    if all(" " <= c <= "~" or c in "\n\t" for c in value):
        return f"{name}: {value}"
    if name.lower() in ("from", "to", "cc", "reply-to"):
        from email.utils import formataddr, parseaddr

        disp, addr = parseaddr(value)
        try:
            return f"{name}: {formataddr((disp, addr), charset='utf-8')}"
        except UnicodeEncodeError:  # a non-ASCII address (RFC 6532): encoded as one word below
            pass
    return f"{name}: {Header(value, 'utf-8', header_name=name).encode()}"


def _render_headers(headers: list[tuple[str, str]]) -> bytes:
    return "".join(_encode_header(n, v) + "\n" for n, v in headers).encode("ascii", "replace")


def _render(headers: list[tuple[str, str]], body: str | None) -> bytes:
    if body is None:
        return _render_headers(headers)
    text = body.replace("\r\n", "\n")
    if not text.endswith("\n"):
        text += "\n"
    if all(ord(c) < 128 for c in text):
        cte = "7bit"
        payload = text.encode("ascii")
    else:
        import quopri

        cte = "quoted-printable"
        payload = quopri.encodestring(text.encode("utf-8"))
    headers = [*headers, ("Content-Type", "text/plain; charset=utf-8"), ("Content-Transfer-Encoding", cte)]
    return _render_headers(headers) + b"\n" + payload
