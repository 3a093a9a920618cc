"""Sending one queued message: through the configured relay, or to the recipient domain's MX hosts.

`send()` returns a Result: "sent", "temp" (try again later) or "perm" (a 5xx:
bounce now). MX delivery follows RFC 5321 section 5: MX records by preference
(equal preferences shuffled), the domain's own A/AAAA when it has no MX,
a null MX (RFC 7505) or a domain that does not exist is permanent, and a
connection failure or 4xx from one host moves on to the next.
"""

from __future__ import annotations

import functools
import logging
import random
import re
import smtplib
import ssl
import subprocess

from fetchdeliver.errors import FetchdeliverError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fetchdeliver.outbound.settings import OutboundSettings

log = logging.getLogger(__name__)

SENT, TEMP, PERM = "sent", "temp", "perm"


class Result:
    __slots__ = ("status", "text")

    def __init__(self, status: str, text: str = "") -> None:
        self.status = status
        self.text = text

    def __repr__(self) -> str:
        return f"Result({self.status!r}, {self.text!r})"


class _Failure(FetchdeliverError):
    def __init__(self, status: str, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


def to_crlf(raw: bytes) -> bytes:
    """SMTP wants CRLF line ends: every bare LF becomes CRLF (CRLF and bare CR stay)."""
    return re.sub(rb"(?<!\r)\n", b"\r\n", raw)


def _reply_text(code: int, msg) -> str:
    if isinstance(msg, bytes):
        msg = msg.decode("utf-8", "replace")
    return f"{code} {' '.join(str(msg).split())}"


def _classify(code: int) -> str:
    return PERM if 500 <= code <= 599 else TEMP


def _transfer(s: smtplib.SMTP, sender: str, rcpt: str, data: bytes, where: str) -> None:
    """MAIL, RCPT, DATA on an open session; raises _Failure with the server's answer."""
    opts = []
    if s.has_extn("size"):
        opts.append(f"SIZE={len(data)}")
    if s.has_extn("8bitmime") and any(b > 127 for b in data):
        opts.append("BODY=8BITMIME")
    code, msg = s.mail(sender, opts)
    if code != 250:
        raise _Failure(_classify(code), f"{where} said to MAIL FROM:<{sender}>: {_reply_text(code, msg)}")
    code, msg = s.rcpt(rcpt)
    if code not in (250, 251):
        raise _Failure(_classify(code), f"{where} said to RCPT TO:<{rcpt}>: {_reply_text(code, msg)}")
    reply: tuple[int, bytes | str]
    try:
        reply = s.data(data)
    except smtplib.SMTPDataError as e:
        reply = e.smtp_code, e.smtp_error
    code, answer = reply
    if code != 250:
        raise _Failure(_classify(code), f"{where} said to DATA: {_reply_text(code, answer)}")


def _password(relay: dict) -> str:
    if "password" in relay:
        return relay["password"]
    cmd = relay["password_command"]
    try:
        out = subprocess.run(cmd, shell=True, capture_output=True, timeout=60)
    except subprocess.TimeoutExpired:
        raise _Failure(TEMP, f"relay.password_command {cmd!r} did not finish in 60 s") from None
    if out.returncode != 0:
        err = out.stderr.decode("utf-8", "replace").strip()[:200]
        raise _Failure(TEMP, f"relay.password_command {cmd!r} failed with exit code {out.returncode}: {err}")
    return out.stdout.decode("utf-8", "replace").rstrip("\r\n")


def _oauth2_source(settings: "OutboundSettings"):
    """The Account whose OAuth2 code gives the relay its access token: the [[account]] named by
    relay.oauth2_account (its refresh flow, stored grant or token command), or one made of
    relay.oauth2_token_command."""
    from fetchdeliver.sources.accounts import Account
    from fetchdeliver.config import Settings

    relay = settings.relay
    assert relay is not None
    config = Settings({"delivery": {"state_dir": settings.state_dir}, "account": settings.accounts})
    name = relay.get("oauth2_account")
    if name is None:
        return Account({"name": "[relay]", "protocol": "imap", "host": relay["host"], "user": relay["user"],
                        "oauth2_token_command": relay["oauth2_token_command"]}, config)
    table = next((t for t in settings.accounts if t.get("name") == name), None)
    if table is None:
        known = ", ".join(repr(t.get("name")) for t in settings.accounts) or "none"
        raise _Failure(TEMP, f"relay.oauth2_account = {name!r} names no [[account]] (accounts: {known})")
    account = Account(table, config)
    if not account.uses_oauth2:
        raise _Failure(TEMP, f"relay.oauth2_account = {name!r}: that account has no OAuth2 settings "
                             "(oauth2_provider, the oauth2_token_url/oauth2_client_id/oauth2_refresh_token keys "
                             "or oauth2_token_command)")
    return account


def _oauth2_login(s: smtplib.SMTP, settings: "OutboundSettings", where: str) -> None:
    """AUTH XOAUTH2 / OAUTHBEARER with an access token from the accounts' OAuth2 code (cached until it
    expires); a token the server refuses is refreshed once, as for IMAP and POP3 logins."""
    import base64

    from fetchdeliver.sources.credentials import SecretError, oauthbearer_string, xoauth2_string

    relay = settings.relay
    assert relay is not None
    account = _oauth2_source(settings)
    user = relay.get("user") or account.user
    mech = (relay.get("oauth2_mechanism") or account.oauth2_mechanism).upper()
    offered = (s.esmtp_features.get("auth") or "").upper().split()
    if mech not in offered:
        raise _Failure(TEMP, f"{where} does not offer AUTH {mech} (it offers: {' '.join(offered) or 'no AUTH'})")
    for attempt in (0, 1):
        try:
            token = account.access_token(refresh=attempt == 1)
        except SecretError as e:
            raise _Failure(TEMP, f"no OAuth2 access token for the relay: {e}") from None
        if mech == "OAUTHBEARER":
            blob = oauthbearer_string(user, token, relay["host"], relay["port"])
        else:
            blob = xoauth2_string(user, token)
        code, msg = s.docmd("AUTH", f"{mech} {base64.b64encode(blob).decode()}")
        detail = ""
        if code == 334:
            # RFC 7628 3.2.2: an error challenge (JSON); the client answers "\x01" (XOAUTH2: empty), then 535.
            try:
                detail = base64.b64decode(msg).decode("utf-8", "replace")
            except ValueError:
                detail = msg.decode("utf-8", "replace")
            code, msg = s.docmd(base64.b64encode(b"\x01").decode() if mech == "OAUTHBEARER" else "")
        if code == 235:
            return
        if attempt == 0 and account.uses_oauth2_flow and 500 <= code <= 599:
            continue   # a cached token the server no longer takes: refresh once
        # A refused token is ours to fix, not the sender's: retry later, do not bounce.
        raise _Failure(TEMP, f"{where} refused the {mech} login of {user!r}: {_reply_text(code, msg)}"
                             + (f" ({detail})" if detail else ""))


@functools.lru_cache(maxsize=8)
def _tls_context(ca_file: str | None) -> ssl.SSLContext:
    # Loading the system's CA store costs ~20 ms: once per process, not once per message.
    return ssl.create_default_context(cafile=ca_file)


def send_via_relay(settings: "OutboundSettings", sender: str, rcpt: str, data: bytes) -> Result:
    relay = settings.relay
    assert relay is not None
    host, port, tls = relay["host"], relay["port"], relay["tls"]
    where = f"relay {host}:{port}"
    helo = relay.get("helo") or settings.hostname
    timeout = relay.get("timeout") or settings.timeout
    ctx = _tls_context(relay.get("ca_file")) if tls != "none" else None
    s: smtplib.SMTP | None = None
    try:
        if tls == "implicit":
            s = smtplib.SMTP_SSL(host, port, local_hostname=helo, timeout=timeout, context=ctx)
        else:
            s = smtplib.SMTP(host, port, local_hostname=helo, timeout=timeout)
        s.ehlo()
        if tls == "starttls":
            if not s.has_extn("starttls"):
                raise _Failure(TEMP, f"{where} does not offer STARTTLS (relay.tls = \"starttls\"); "
                                     "not sending the password or mail in clear text")
            s.starttls(context=ctx)
            s.ehlo()
        if "oauth2_account" in relay or "oauth2_token_command" in relay:
            _oauth2_login(s, settings, where)
        elif relay.get("user"):
            try:
                s.login(relay["user"], _password(relay))
            except smtplib.SMTPAuthenticationError as e:
                # A wrong password is ours to fix, not the sender's: retry, do not bounce.
                raise _Failure(TEMP, f"{where} refused the login of {relay['user']!r}: "
                                     f"{_reply_text(e.smtp_code, e.smtp_error)}") from None
            except smtplib.SMTPNotSupportedError:
                raise _Failure(TEMP, f"{where} does not offer AUTH") from None
        _transfer(s, sender, rcpt, data, where)
        return Result(SENT, f"{where} accepted the message")
    except _Failure as f:
        return Result(f.status, f.text)
    except (OSError, smtplib.SMTPException, ssl.SSLError) as e:
        return Result(TEMP, f"{where}: {e}")
    finally:
        _close(s)


def _close(s) -> None:
    if s is not None:
        try:
            s.quit()
        except (OSError, smtplib.SMTPException):
            try:
                s.close()
            except OSError:
                pass


# -- MX delivery -----------------------------------------------------------------------------------

def _resolver(settings: "OutboundSettings"):
    import dns.nameserver
    import dns.resolver

    from fetchdeliver.outbound.settings import split_nameserver

    if settings.nameservers:
        r = dns.resolver.Resolver(configure=False)
        r.nameservers = [dns.nameserver.Do53Nameserver(*split_nameserver(n)) for n in settings.nameservers]
    else:
        r = dns.resolver.Resolver()
    r.lifetime = min(30.0, float(settings.timeout))
    return r


def mx_hosts(domain: str, resolver) -> list[str]:
    """The hosts to try for `domain`, best first; raises _Failure."""
    import dns.exception
    import dns.resolver

    try:
        answer = resolver.resolve(domain, "MX")
    except dns.resolver.NXDOMAIN:
        raise _Failure(PERM, f"the domain {domain} does not exist (DNS: NXDOMAIN)") from None
    except dns.resolver.NoAnswer:
        return [domain]  # RFC 5321 5.1: no MX, the domain itself is the implicit MX
    except (dns.exception.Timeout, dns.resolver.NoNameservers) as e:
        raise _Failure(TEMP, f"MX lookup of {domain} failed: {e}") from None
    except dns.exception.DNSException as e:
        raise _Failure(TEMP, f"MX lookup of {domain} failed: {e}") from None
    records = [(r.preference, str(r.exchange).rstrip(".")) for r in answer]
    if len(records) == 1 and records[0][1] == "":
        raise _Failure(PERM, f"{domain} accepts no mail (null MX, RFC 7505)")
    rnd = random.SystemRandom()
    records.sort(key=lambda pr: (pr[0], rnd.random()))
    return [h for _p, h in records if h]


def host_addresses(host: str, resolver) -> list[str]:
    import ipaddress

    import dns.exception
    import dns.resolver

    try:
        ipaddress.ip_address(host)
        return [host]
    except ValueError:
        pass
    out: list[str] = []
    for rdtype in ("A", "AAAA"):
        try:
            out += [r.address for r in resolver.resolve(host, rdtype)]
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            continue
        except dns.exception.DNSException as e:
            log.info("address lookup %s %s failed: %s", host, rdtype, e)
    return out


def send_via_mx(settings: "OutboundSettings", sender: str, rcpt: str, data: bytes) -> Result:
    domain = rcpt.rpartition("@")[2].strip().rstrip(".")
    if not domain or "@" not in rcpt:
        return Result(PERM, f"<{rcpt}> has no domain to look up")
    try:
        hosts = mx_hosts(domain, _resolver(settings))
    except _Failure as f:
        return Result(f.status, f.text)
    resolver = _resolver(settings)
    errors = []
    for host in hosts:
        addrs = host_addresses(host, resolver)
        if not addrs:
            errors.append(f"{host}: no address (A/AAAA)")
            continue
        for ip in addrs:
            where = f"{host}[{ip}]:{settings.mx_port}"
            s = None
            try:
                s = smtplib.SMTP(ip, settings.mx_port, local_hostname=settings.hostname,
                                 timeout=settings.timeout)
                code, msg = s.ehlo()
                if code != 250:
                    code, msg = s.helo()
                    if code != 250:
                        raise _Failure(TEMP, f"{where} refused HELO: {_reply_text(code, msg)}")
                if s.has_extn("starttls"):
                    # Opportunistic TLS (RFC 3207): MX certificates are rarely verifiable.
                    ctx = ssl.create_default_context()
                    ctx.check_hostname = False
                    ctx.verify_mode = ssl.CERT_NONE
                    s.starttls(context=ctx)
                    s.ehlo()
                _transfer(s, sender, rcpt, data, where)
                return Result(SENT, f"{where} accepted the message")
            except _Failure as f:
                if f.status == PERM:
                    return Result(PERM, f.text)
                errors.append(f.text)
            except smtplib.SMTPResponseException as e:
                if 500 <= e.smtp_code <= 599:
                    return Result(PERM, f"{where}: {_reply_text(e.smtp_code, e.smtp_error)}")
                errors.append(f"{where}: {_reply_text(e.smtp_code, e.smtp_error)}")
            except (OSError, smtplib.SMTPException, ssl.SSLError) as e:
                errors.append(f"{where}: {e}")
            finally:
                _close(s)
    return Result(TEMP, "; ".join(errors) or f"no usable mail host for {domain}")


def send(settings: "OutboundSettings", sender: str, rcpt: str, raw: bytes) -> Result:
    data = to_crlf(raw)
    if settings.relay:
        return send_via_relay(settings, sender, rcpt, data)
    return send_via_mx(settings, sender, rcpt, data)
