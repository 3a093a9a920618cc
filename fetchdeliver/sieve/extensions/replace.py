"""RFC 5703 section 5: `replace` (Pigeonhole lacks it); enclose.py uses its helpers.

It changes the message the rest of the script sees and that keep, fileinto and
redirect deliver, as editheader does (the result's message; the received bytes
are what a run-time error falls back to).

- ``replace [:mime] [:subject S] [:from F] TEXT``: outside `foreverypart` the whole
  body is replaced (a text/plain UTF-8 part, or with :mime a MIME entity: its own
  headers and content); the header fields are kept except those describing the
  MIME structure, :subject and :from keep the old values as Original-Subject and
  Original-From. Inside `foreverypart` the current part is replaced.
"""

from __future__ import annotations

from fetchdeliver.sieve.registry import Extension

EXT = Extension("replace", default=False)

MIME_HEADERS = ("content-type", "content-transfer-encoding", "content-disposition", "content-id",
                "content-description", "content-language", "content-location", "content-md5",
                "mime-version")


def line_ending(raw: bytes) -> bytes:
    return b"\r\n" if b"\r\n" in raw[:4096] else b"\n"


def encode_field(name: str, value: str) -> bytes:
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


def text_part(text: str, eol: bytes) -> tuple[list[bytes], bytes]:
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
    eol = line_ending(raw)
    headers, body = _mime_entity(text, eol) if "mime" in tags else text_part(text, eol)
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
        top.append(encode_field("From", ctx.expand(tags["from"])))
    if "subject" in tags:
        top.append(encode_field("Subject", ctx.expand(tags["subject"])))
    new = eol.join(top + kept + [b"MIME-Version: 1.0"] + headers) + eol + eol + body
    set_message(ctx, new)
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
    set_message(ctx, _flatten(root, eol))
    ctx.note("replace: the current MIME part")


def _flatten(root, eol: bytes) -> bytes:
    import io
    from email import policy
    from email.generator import BytesGenerator

    buf = io.BytesIO()
    BytesGenerator(buf, mangle_from_=False, maxheaderlen=0,
                   policy=policy.compat32.clone(linesep=eol.decode())).flatten(root)
    return buf.getvalue()


def set_message(ctx, raw: bytes) -> None:
    ctx.message = ctx.message.with_raw(raw)
    ctx.edited = True
