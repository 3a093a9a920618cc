"""QUOTA (RFC 9208): GETQUOTA, GETQUOTAROOT and SETQUOTA over the user's quota (storage/quota.py).

Offered when the configuration has a `[quota]` table: the capabilities QUOTA, QUOTA=RES-STORAGE and
QUOTA=RES-MESSAGE, and QUOTASET when `[quota] admins` names anyone. Each user has one quota root,
named as Dovecot names its default one ("User quota"), covering all their mailboxes. STORAGE is in
units of 1024 octets (usage rounded up, as Dovecot reports it); a resource without a limit is left
out of the QUOTA response. Over quota, APPEND and COPY answer `NO [OVERQUOTA]` (the store raises it;
a COPY that cannot be completed leaves nothing behind); a MOVE within the user's mail is not checked,
since the expunge that follows frees what it takes. STATUS DELETED and DELETED-STORAGE are in
commands/authenticated.py. SETQUOTA is for the logins in `[quota] admins` (on their own session's
root, as Dovecot's master users do); anyone else gets `NO [NOPERM]`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fetchdeliver.imapserver.commands.registry import AUTHED, command
from fetchdeliver.imapserver.protocol import ATOM_CHARS, ParseError, Parser, astring_or_quoted, encode_mailbox
from fetchdeliver.storage.base import StorageError

if TYPE_CHECKING:
    from fetchdeliver.imapserver.session import Session
    from fetchdeliver.storage.base import Quota, QuotaStatus

RESOURCES = ("STORAGE", "MESSAGE")


def _offered(s: Session) -> list[str]:
    settings = getattr(s.server.config, "quota_settings", None)
    if settings is None:
        return []
    caps = ["QUOTA", "QUOTA=RES-STORAGE", "QUOTA=RES-MESSAGE"]
    if (settings.data.get("quota") or {}).get("admins"):
        caps.append("QUOTASET")
    return caps


def _quota(s: Session) -> Quota:
    quota = getattr(s.storage, "quota", None)
    if quota is None:
        raise StorageError("There is no quota for this user's mail store.", "NONEXISTENT")
    return quota


def astring(name: str) -> bytes:
    """A mailbox name as an atom where it is one (`INBOX`, as Dovecot answers), else quoted/literal."""
    encoded = encode_mailbox(name)
    bare = encoded[1:-1] if encoded.startswith(b'"') else b""
    if bare and all(c in ATOM_CHARS or c == 93 for c in bare) and bare.upper() != b"NIL":   # 93: "]"
        return bare
    return encoded


def quota_line(st: QuotaStatus) -> bytes:
    """`* QUOTA root (STORAGE used limit MESSAGE used limit)`, resources without a limit left out."""
    parts = []
    if st.bytes_limit is not None:
        parts.append(f"STORAGE {(st.bytes + 1023) // 1024} {st.bytes_limit // 1024}")
    if st.messages_limit is not None:
        parts.append(f"MESSAGE {st.messages} {st.messages_limit}")
    return b"* QUOTA " + astring_or_quoted(st.root) + f" ({' '.join(parts)})\r\n".encode()


@dataclass(frozen=True)
class RootArgs:
    root: str


@dataclass(frozen=True)
class MailboxArgs:
    mailbox: str


@dataclass(frozen=True)
class SetQuotaArgs:
    root: str
    limits: tuple[tuple[str, int], ...]


def parse_getquota(p: Parser, uid: bool = False) -> RootArgs:
    p.sp()
    root = p.astring().decode("utf-8", "replace")
    p.end()
    return RootArgs(root)


def parse_getquotaroot(p: Parser, uid: bool = False) -> MailboxArgs:
    p.sp()
    name = p.mailbox()
    p.end()
    return MailboxArgs(name)


def parse_setquota(p: Parser, uid: bool = False) -> SetQuotaArgs:
    """SETQUOTA root (resource limit ...): a resource's limit in its units (STORAGE in KiB)."""
    p.sp()
    root = p.astring().decode("utf-8", "replace")
    p.sp()
    p.expect(b"(")
    limits: list[tuple[str, int]] = []
    while not p.maybe(b")"):
        if limits:
            p.sp()
        name = p.atom().upper()
        p.sp()
        limits.append((name, p.number()))
    p.end()
    return SetQuotaArgs(root, tuple(limits))


def _check_root(quota: Quota, root: str) -> None:
    if root != quota.root:
        raise StorageError(f"No such quota root: {root}", "NONEXISTENT")


@command("GETQUOTA", AUTHED, parse=parse_getquota, dynamic=_offered)
async def getquota(s: Session, tag: str, args: RootArgs) -> None:
    quota = _quota(s)
    _check_root(quota, args.root)
    st = quota.status()
    await s.send(quota_line(st) + f"{tag} OK Getquota completed.\r\n".encode())


@command("GETQUOTAROOT", AUTHED, parse=parse_getquotaroot)
async def getquotaroot(s: Session, tag: str, args: MailboxArgs) -> None:
    quota = _quota(s)
    if not s.storage.exists(args.mailbox):
        raise StorageError(f"Mailbox doesn't exist: {args.mailbox}", "NONEXISTENT")
    st = quota.status()
    head = b"* QUOTAROOT " + astring(args.mailbox) + b" " + astring_or_quoted(st.root) + b"\r\n"
    await s.send(head + quota_line(st) + f"{tag} OK Getquotaroot completed.\r\n".encode())


@command("SETQUOTA", AUTHED, parse=parse_setquota)
async def setquota(s: Session, tag: str, args: SetQuotaArgs) -> None:
    settings = getattr(s.server.config, "quota_settings", None)
    admins = (settings.data.get("quota") or {}).get("admins", []) if settings is not None else []
    user = getattr(s.account, "user", None)
    if user not in admins:
        raise StorageError("Only an administrator may change quotas.", "NOPERM")
    quota = _quota(s)
    _check_root(quota, args.root)
    unknown = [n for n, _ in args.limits if n not in RESOURCES]
    if unknown:
        raise ParseError(f"unknown quota resource {unknown[0]}")
    given = dict(args.limits)
    # A resource left out keeps no limit (RFC 9208 4.1.3: the list replaces the root's limits).
    quota.set_limits(given["STORAGE"] * 1024 if "STORAGE" in given else None, given.get("MESSAGE"))
    await s.send(quota_line(quota.status()) + f"{tag} OK Setquota completed.\r\n".encode())
