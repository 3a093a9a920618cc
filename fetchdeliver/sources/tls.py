"""TLS for account sources: the verifying context, and certificate pins (fingerprints, SPKI).

`fingerprint = ...` in [[account]] pins the server's certificate: a SHA-256 fingerprint of the
certificate (hex, colons allowed) or an SPKI pin `sha256//BASE64`; any of a list may match.
With pins and no ca_file the pins replace CA verification (self-signed servers) unless
`verify = true`.
"""

from __future__ import annotations

from fetchdeliver.errors import FetchdeliverError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ssl


class TLSPinError(FetchdeliverError):
    """The certificate does not match the configured fingerprint."""


def normalise_pin(v: str) -> str:
    """One pin: a SHA-256 certificate fingerprint (hex, colons allowed) -> 64 lower-case hex digits,
    or an SPKI pin `sha256//BASE64` (as curl's --pinnedpubkey and HPKP write them) -> normalised."""
    import base64
    import binascii

    text = v.strip()
    if text.lower().startswith("sha256//"):
        try:
            raw = base64.b64decode(text[8:].strip(), validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 32:
            raise ValueError("expected an SPKI pin sha256//BASE64 (the base64 of 32 bytes, e.g. from `openssl "
                             "x509 -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 "
                             f"-binary | base64`), got {v!r}")
        return "sha256//" + base64.b64encode(raw).decode()
    text = text.lower()
    if text.startswith("sha256:"):
        text = text[7:]
    text = text.replace(":", "").replace(" ", "")
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise ValueError("expected a SHA-256 certificate fingerprint: 64 hex digits, colons allowed "
                         f"(e.g. from `openssl x509 -noout -fingerprint -sha256`), or an SPKI pin sha256//BASE64, "
                         f"got {v!r}")
    return text


def check_fingerprint(v, where):
    """One pin or a list of them (any may match: list the next certificate before a rotation)."""
    items = [v] if isinstance(v, str) else v
    if not isinstance(items, list) or not items or not all(isinstance(x, str) for x in items):
        raise ValueError(f"expected a fingerprint or a non-empty list of them, got {v!r}")
    return [normalise_pin(x) for x in items]


def client_context(*, verify: bool, ca_file: str | None, min_version: str) -> "ssl.SSLContext":
    """Verifying context: the system CAs, or only `ca_file`; `verify=False` (pins only) checks no chain."""
    import ssl

    if verify:
        ctx = ssl.create_default_context(cafile=ca_file)
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3 if min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    return ctx


def check_pins(sock, pins: list[str]) -> None:
    """Raise TLSPinError unless the peer certificate of `sock` matches one of `pins` (none: no check)."""
    if not pins:
        return
    import base64
    import hashlib

    der = sock.getpeercert(binary_form=True) or b""
    got = hashlib.sha256(der).hexdigest()
    if got in pins:
        return
    try:
        spki = "sha256//" + base64.b64encode(hashlib.sha256(spki_der(der)).digest()).decode()
    except ValueError:
        spki = "(unreadable certificate)"
    if spki in pins:
        return
    wanted = ", ".join(p if p.startswith("sha256//") else _colons(p) for p in pins)
    raise TLSPinError(f"the server's certificate has SHA-256 fingerprint {_colons(got)} and SPKI pin {spki}; "
                      f"neither is pinned (fingerprint = {wanted})")


def spki_der(cert_der: bytes) -> bytes:
    """The DER SubjectPublicKeyInfo of a DER X.509 certificate (what an SPKI pin hashes).

    Walks the fixed start of TBSCertificate (RFC 5280 4.1): [0] version, serialNumber, signature,
    issuer, validity, subject, subjectPublicKeyInfo. Raises ValueError on anything else.
    """
    def element(pos: int) -> tuple[int, int, int]:
        """(tag, content start, end) of the DER element at `pos`."""
        if pos + 2 > len(cert_der):
            raise ValueError("truncated certificate")
        tag, length = cert_der[pos], cert_der[pos + 1]
        pos += 2
        if length & 0x80:
            n = length & 0x7F
            if not 0 < n <= 4 or pos + n > len(cert_der):
                raise ValueError("bad DER length")
            length = int.from_bytes(cert_der[pos:pos + n], "big")
            pos += n
        if pos + length > len(cert_der):
            raise ValueError("truncated certificate")
        return tag, pos, pos + length

    tag, body, _ = element(0)                 # Certificate
    if tag != 0x30:
        raise ValueError("not a DER certificate")
    tag, pos, _ = element(body)               # TBSCertificate
    if tag != 0x30:
        raise ValueError("not a DER certificate")
    tag, _, end = element(pos)
    if tag == 0xA0:                           # [0] EXPLICIT version
        pos = end
    for _ in range(5):                        # serial, signature, issuer, validity, subject
        _, _, pos = element(pos)
    tag, _, end = element(pos)
    if tag != 0x30:
        raise ValueError("no SubjectPublicKeyInfo where expected")
    return bytes(cert_der[pos:end])


def _colons(hexdigest: str) -> str:
    return ":".join(hexdigest[i:i + 2] for i in range(0, len(hexdigest), 2)).upper()
