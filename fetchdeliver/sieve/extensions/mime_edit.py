"""RFC 5703 sections 5 and 6: `replace` and `enclose` (Pigeonhole has neither).

Both change the message the rest of the script sees and that keep, fileinto and
redirect deliver, as editheader does (the result's message; the received bytes
are what a run-time error falls back to).

- ``replace [:mime] [:subject S] [:from F] TEXT``: outside `foreverypart` the whole
  body is replaced (a text/plain UTF-8 part, or with :mime a MIME entity: its own
  headers and content); the header fields are kept except those describing the
  MIME structure, :subject and :from keep the old values as Original-Subject and
  Original-From. Inside `foreverypart` the current part is replaced.
- ``enclose [:subject S] [:headers LIST] TEXT``: a new multipart/mixed message whose
  first part is TEXT (text/plain) and second the message so far (message/rfc822);
  :headers gives header lines ("Name: value") for the new message; From (the
  recipient), Date and Message-ID are added when not given, the Subject is :subject
  or the original one. When a script encloses more than once, only the last
  enclose counts (the original message is enclosed once).
"""

from __future__ import annotations

from fetchdeliver.sieve.registry import Extension

EXT = Extension("replace")

MIME_HEADERS = ("content-type", "content-transfer-encoding", "content-disposition", "content-id",
                "content-description", "content-language", "content-location", "content-md5",
                "mime-version")


def _eol(raw: bytes) -> bytes:
    return b"\r\n" if b"\r\n" in raw[:4096] else b"\n"


def _encode(name: str, value: str) -> bytes:
    value = " ".join(value.replace("\r", " ").replace("\n", " ").split())
    if value.isascii():
        return f"{name}: {value}".encode("ascii")
    from email.header import Header

    return f"{name}: {Header(value, 'utf-8', header_name=name).encode()}".encode("ascii")


def _header_lines(raw: bytes) -> list[tuple[str, bytes]]:
    """The message's header fields as (lower-cased name, raw bytes of the whole field, folded)."""
    from fetchdeliver.message import header_block

    block = header_block(raw)
    out: list[tuple[str, bytes]] = []
    for line in block.splitlines(keepends=True):
        if not line.strip():
            break
        if line[:1] in (b" ", b"\t") and out:
            out[-1] = (out[-1][0], out[-1][1] + line)
        else:
            out.append((line.split(b":", 1)[0].strip().decode("ascii", "replace").lower(), line))
    return out


def _text_part(text: str, eol: bytes) -> tuple[list[bytes], bytes]:
    body = text.replace("\r\n", "\n").encode("utf-8")
    headers = [b"Content-Type: text/plain; charset=utf-8",
               b"Content-Transfer-Encoding: " + (b"7bit" if body.isascii() else b"8bit")]
    return headers, body.replace(b"\n", eol)


def _mime_entity(text: str, eol: bytes) -> tuple[list[bytes], bytes]:
    """:mime: TEXT is a MIME entity: header fields, an empty line, the content."""
    data = text.replace("\r\n", "\n")
    head, sep, body = data.partition("\n\n")
    if not sep and head.startswith(("\n",)):
        head, body = "", data[1:]
    lines: list[bytes] = []
    for line in head.split("\n"):
        if not line:
            continue
        if line[:1] in (" ", "\t") and lines:
            lines[-1] += eol + line.encode("utf-8")
        else:
            lines.append(line.encode("utf-8"))
    if not any(ln.lower().startswith(b"content-type:") for ln in lines):
        lines.insert(0, b"Content-Type: text/plain; charset=utf-8")
    return lines, body.encode("utf-8").replace(b"\n", eol)


def _check_from(v, node, out) -> None:
    value = out[2].get("from")
    if isinstance(value, str) and v.constant(value):
        from fetchdeliver.sieve.addresses import parse_address_list

        if not any(a is not None and a.raw is None for a in parse_address_list(value)):
            v.error(f"replace: the :from value '{value}' is not a valid address", node)


@EXT.command("replace", args=("string",), tags={"mime": None, "subject": "string", "from": "string"},
             check=_check_from)
def replace(ctx, node) -> None:
    tags = node[2]
    text = ctx.expand(node[3][0])
    raw = ctx.message.raw
    eol = _eol(raw)
    headers, body = _mime_entity(text, eol) if "mime" in tags else _text_part(text, eol)
    if ctx.mime_part is not None and ctx.ext_state.get("mime_root") is not None \
            and ctx.mime_part is not ctx.ext_state["mime_root"]:
        _replace_part(ctx, headers, body, eol)
        return
    kept: list[bytes] = []
    for name, line in _header_lines(raw):
        if name in MIME_HEADERS:
            continue
        if name == "subject" and "subject" in tags:
            line = b"Original-" + line
        elif name == "from" and "from" in tags:
            line = b"Original-" + line
        kept.append(line.rstrip(b"\r\n"))
    top: list[bytes] = []
    if "from" in tags:
        top.append(_encode("From", ctx.expand(tags["from"])))
    if "subject" in tags:
        top.append(_encode("Subject", ctx.expand(tags["subject"])))
    new = eol.join(top + kept + [b"MIME-Version: 1.0"] + headers) + eol + eol + body
    _set(ctx, new)
    ctx.note("replace: the message body")


def _replace_part(ctx, headers: list[bytes], body: bytes, eol: bytes) -> None:
    """Inside foreverypart: the current part gets the new headers and content."""
    from email import message_from_bytes, policy

    part = ctx.mime_part
    entity = message_from_bytes(eol.join(headers) + eol + eol + body, policy=policy.compat32)
    for name in list(part.keys()):
        if name.lower() in MIME_HEADERS:
            del part[name]
    for name, value in entity.items():
        part[name] = value
    part.set_payload(entity.get_payload())
    root = ctx.ext_state["mime_root"]
    _set(ctx, _flatten(root, eol))
    ctx.note("replace: the current MIME part")


def _flatten(root, eol: bytes) -> bytes:
    import io
    from email import policy
    from email.generator import BytesGenerator

    buf = io.BytesIO()
    BytesGenerator(buf, mangle_from_=False, maxheaderlen=0,
                   policy=policy.compat32.clone(linesep=eol.decode())).flatten(root)
    return buf.getvalue()


def _set(ctx, raw: bytes) -> None:
    ctx.message = ctx.message.with_raw(raw)
    ctx.edited = True


@EXT.command("enclose", args=("string",), tags={"subject": "string", "headers": "strings"}, ext="enclose")
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
    eol = _eol(raw)
    given: list[bytes] = []
    names: set[str] = set()
    for h in ctx.expand_list(tags.get("headers", [])):
        name, sep, value = h.partition(":")
        name = name.strip()
        if not sep or not name or not value.strip() or name.lower() in MIME_HEADERS + ("subject",):
            continue
        given.append(_encode(name, value.strip()))
        names.add(name.lower())
    subject = ctx.expand(tags["subject"]) if "subject" in tags else (original.get("Subject") or "")
    top = [_encode("Subject", subject)] if subject else []
    if "from" not in names:
        top.append(_encode("From", ctx.env.envelope_to or "MAILER-DAEMON"))
    if "date" not in names:
        top.append(_encode("Date", formatdate(ctx.env.now if ctx.env.now else time.time(), localtime=True)))
    if "message-id" not in names:
        top.append(_encode("Message-ID", make_msgid(domain=ctx.env.hostname or "localhost")))
    boundary = "enclose-" + os.urandom(9).hex()
    text_headers, text_body = _text_part(ctx.expand(node[3][0]), eol)
    b = boundary.encode("ascii")
    new = (eol.join(top + given + [b"MIME-Version: 1.0",
                                   b'Content-Type: multipart/mixed; boundary="' + b + b'"']) + eol + eol
           + b"--" + b + eol + eol.join(text_headers) + eol + eol + text_body + eol
           + b"--" + b + eol + b"Content-Type: message/rfc822" + eol + eol + raw
           + (b"" if raw.endswith(eol) else eol) + b"--" + b + b"--" + eol)
    _set(ctx, new)
    ctx.note("enclose: the message")
