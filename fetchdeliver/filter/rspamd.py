"""rspamd's normal worker over HTTP: POST the message to /checkv2, read the JSON verdict
(https://rspamd.com/doc/developers/protocol.html). stdlib http.client only."""

from __future__ import annotations

import json

from fetchdeliver.errors import FilterUnavailable
from fetchdeliver.filter.verdict import SpamVerdict

# Actions after which rspamd itself would mark or refuse the message.
SPAM_ACTIONS = {"reject", "add header", "rewrite subject"}


def check(url: str, raw: bytes, timeout: float, sender: str = "",
          recipients: list[str] | None = None) -> SpamVerdict:
    """Ask rspamd at `url` about `raw`; FilterUnavailable when it is down, slow or answers an error."""
    import http.client
    import socket
    from urllib.parse import urlsplit

    what = f"rspamd {url}"
    parts = urlsplit(url)
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    path = (parts.path.rstrip("/") or "") + "/checkv2"
    headers = {"Content-Length": str(len(raw))}
    if sender:
        headers["From"] = sender
    for rcpt in recipients or ():
        headers["Rcpt"] = rcpt  # http.client sends one; rspamd reads the envelope's first recipient
        break
    conn = cls(parts.hostname or "", parts.port, timeout=timeout)
    try:
        conn.request("POST", path, body=raw, headers=headers)
        resp = conn.getresponse()
        body = resp.read(1 << 22)
        status = resp.status
    except socket.timeout:
        raise FilterUnavailable(f"{what}: no answer in time (timeout)") from None
    except (OSError, http.client.HTTPException) as e:
        raise FilterUnavailable(f"{what}: {getattr(e, 'strerror', None) or e or type(e).__name__}") from None
    finally:
        conn.close()
    if status != 200:
        raise FilterUnavailable(f"{what}: HTTP {status}: {body[:200].decode('utf-8', 'replace')}")
    return parse(body, what)


def parse(body: bytes, what: str = "rspamd") -> SpamVerdict:
    try:
        data = json.loads(body)
        score = float(data["score"])
        required = float(data.get("required_score", 0.0))
        action = str(data.get("action", "no action"))
    except (ValueError, KeyError, TypeError):
        raise FilterUnavailable(f"{what}: not a /checkv2 answer: {body[:200]!r}") from None
    symbols = data.get("symbols") or {}
    tests = sorted(symbols) if isinstance(symbols, dict) else []
    if data.get("is_skipped") and not tests:  # pre-filtered (settings): a verdict all the same, visible
        tests = ["RSPAMD_SKIPPED"]
    spam = action in SPAM_ACTIONS or (required > 0 and score >= required)
    return SpamVerdict("rspamd", spam, score, required, tests)
