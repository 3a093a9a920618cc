"""RFC 5703 section 6: `enclose` (Pigeonhole lacks it).

``enclose [:subject S] [:headers LIST] TEXT``: a new multipart/mixed message whose
first part is TEXT (text/plain) and second the message so far (message/rfc822);
:headers gives header lines ("Name: value") for the new message; From (the
recipient), Date and Message-ID are added when not given, the Subject is :subject
or the original one. When a script encloses more than once, only the last
enclose counts (the original message is enclosed once).
"""

from __future__ import annotations

from fetchdeliver.sieve.extensions.replace import MIME_HEADERS, encode_field, line_ending, set_message, text_part
from fetchdeliver.sieve.registry import Extension

EXT = Extension("enclose", default=False)


@EXT.command("enclose", args=("string",), tags={"subject": "string", "headers": "strings"})
def enclose(ctx, node) -> None:
    import os
    import time
    from email.utils import formatdate, make_msgid

    tags = node[2]
    original = ctx.ext_state.get("enclosed_original")
    if original is None:
        original = ctx.message
        ctx.ext_state["enclosed_original"] = original  # a later enclose replaces this one
    raw = original.raw
    eol = line_ending(raw)
    given: list[bytes] = []
    names: set[str] = set()
    for h in ctx.expand_list(tags.get("headers", [])):
        name, sep, value = h.partition(":")
        name = name.strip()
        if not sep or not name or not value.strip() or name.lower() in MIME_HEADERS + ("subject",):
            continue
        given.append(encode_field(name, value.strip()))
        names.add(name.lower())
    subject = ctx.expand(tags["subject"]) if "subject" in tags else (original.get("Subject") or "")
    top = [encode_field("Subject", subject)] if subject else []
    if "from" not in names:
        top.append(encode_field("From", ctx.env.envelope_to or "MAILER-DAEMON"))
    if "date" not in names:
        top.append(encode_field("Date", formatdate(ctx.env.now if ctx.env.now else time.time(), localtime=True)))
    if "message-id" not in names:
        top.append(encode_field("Message-ID", make_msgid(domain=ctx.env.hostname or "localhost")))
    boundary = "enclose-" + os.urandom(9).hex()
    text_headers, text_body = text_part(ctx.expand(node[3][0]), eol)
    b = boundary.encode("ascii")
    new = (eol.join(top + given + [b"MIME-Version: 1.0",
                                   b'Content-Type: multipart/mixed; boundary="' + b + b'"']) + eol + eol
           + b"--" + b + eol + eol.join(text_headers) + eol + eol + text_body + eol
           + b"--" + b + eol + b"Content-Type: message/rfc822" + eol + eol + raw
           + (b"" if raw.endswith(eol) else eol) + b"--" + b + b"--" + eol)
    set_message(ctx, new)
    ctx.note("enclose: the message")
