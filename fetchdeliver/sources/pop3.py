"""POP3 source (stdlib poplib): STLS / POP3S, APOP or USER/PASS or SASL OAuth2, UIDL, RETR, DELE.

Messages are read with our own RETR reader rather than poplib.retr(): poplib
caps lines at 2048 bytes (a 2 MB single-line message must still be delivered)
and drops the line endings, while we keep the bytes exactly as the server sent
them, minus only the dot-stuffing.
"""

from __future__ import annotations

import base64
import contextlib
import poplib
import ssl

from fetchdeliver.sources.accounts import Account
from fetchdeliver.sources.base import Fetched, SourceError, describe_os_error, header_digest, server_words
from fetchdeliver.sources.credentials import SecretError, oauthbearer_string, xoauth2_string
from fetchdeliver.sources.tls import TLSPinError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from fetchdeliver.sources.base import Handle, Run


@contextlib.contextmanager
def _command(name: str, where: str = "", *, login: bool = False):
    suffix = f" ({where})" if where else ""
    try:
        yield
    except SourceError:
        raise
    except poplib.error_proto as e:
        words = server_words(e.args[0] if e.args else e)
        if words in ("-ERR EOF", ""):
            raise SourceError(name, f"connection closed by the server{suffix}") from None
        raise SourceError(name, f"server said: {words}{suffix}", temporary=not login) from None
    except (OSError, EOFError) as e:
        detail = "connection closed by the server" if isinstance(e, EOFError) else describe_os_error(e)
        raise SourceError(name, f"{detail}{suffix}",
                          temporary=not isinstance(e, ssl.SSLCertVerificationError)) from None


class _POP3Mixin:
    """Raw RETR/TOP that keep line endings and allow lines of any length."""

    def _read_line(self) -> bytes:
        line = self.file.readline()
        if not line:
            raise poplib.error_proto("-ERR EOF")
        return line

    def _raw_long(self, command: str) -> bytes:
        self._putcmd(command)
        resp = self._getresp()  # raises error_proto on -ERR
        del resp
        chunks: list[bytes] = []
        while True:
            line = self._read_line()
            if line in (b".\r\n", b".\n"):
                break
            if line.startswith(b".."):
                line = line[1:]
            chunks.append(line)
        return b"".join(chunks)

    def retr_raw(self, which: int) -> bytes:
        return self._raw_long(f"RETR {which}")

    def top_raw(self, which: int, lines: int = 0) -> bytes:
        return self._raw_long(f"TOP {which} {lines}")


class _POP3(_POP3Mixin, poplib.POP3):
    pass


class _POP3_SSL(_POP3Mixin, poplib.POP3_SSL):
    pass


class Pop3Source:
    """One POP3 session for one account: the Source (sources/base.py) of `protocol = "pop3"`.

    `batches()` compares the maildrop's UIDLs with the state database and RETRs what is new;
    `ack()` DELEs (with `after = "delete"`), which takes effect at QUIT, in `close()`.
    """

    protocol = "pop3"

    def __init__(self, account: Account) -> None:
        self.account = account
        self.conn: poplib.POP3 | None = None
        self.has_uidl = True

    def connect(self) -> None:
        self.close()
        a = self.account
        where = a.address
        ctx = a.ssl_context() if a.tls != "none" else None
        if a.tls == "implicit":
            with _command("TLS connect", where):
                conn = _POP3_SSL(a.host, a.port, timeout=a.timeout, context=ctx)
        else:
            with _command("connect", where):
                conn = _POP3(a.host, a.port, timeout=a.timeout)
        self.conn = conn
        try:
            if a.tls == "starttls":
                with _command("STLS", where):
                    try:
                        caps = conn.capa()
                    except poplib.error_proto:
                        caps = {}
                    if "STLS" not in caps:
                        raise SourceError("STLS", f"the server does not offer STLS ({where}); use "
                                          'tls = "implicit" or, on a trusted network, tls = "none"',
                                          temporary=False)
                    conn.stls(ctx)
            if a.tls != "none":
                try:
                    a.check_peer(conn.sock)
                except TLSPinError as e:
                    raise SourceError("TLS", f"{e} ({where})", temporary=False) from None
            self._login()
        except BaseException:
            self.close(quit=False)
            raise

    def _login(self) -> None:
        a = self.account
        conn = self.conn
        who = f"{a.user} at {a.address}"
        if a.uses_oauth2:
            mech = a.oauth2_mechanism.upper()
            for attempt in (0, 1):
                try:
                    token = a.access_token(refresh=attempt == 1)
                except SecretError as e:
                    raise SourceError(f"AUTH {mech}", str(e), temporary=False) from None
                if mech == "OAUTHBEARER":
                    blob = oauthbearer_string(a.user, token, a.host, a.port)
                else:
                    blob = xoauth2_string(a.user, token)
                try:
                    with _command(f"AUTH {mech}", who, login=True):
                        _sasl_one_step(conn, mech, blob)
                    return
                except SourceError:
                    if attempt == 1 or not a.uses_oauth2_flow:
                        raise
                    self.connect_again_for_retry()
                    conn = self.conn
            return
        try:
            password = a.password()
        except SecretError as e:
            raise SourceError("PASS", str(e), temporary=False) from None
        offers_apop = conn.timestamp.match(conn.welcome) is not None
        if offers_apop and a.apop is not False:
            try:
                with _command("APOP", who, login=True):
                    conn.apop(a.user, password)
                return
            except SourceError:
                if a.apop:  # asked for explicitly: no fallback
                    raise
                # Servers that advertise APOP without plaintext passwords: fall back to USER/PASS.
                self.connect_again_for_retry()
                conn = self.conn
        with _command("USER", who, login=True):
            conn.user(a.user)
        with _command("PASS", who, login=True):
            conn.pass_(password)

    def connect_again_for_retry(self) -> None:
        """A new connection, secured like the first, without logging in (after a failed attempt)."""
        a = self.account
        self.close(quit=False)
        ctx = a.ssl_context() if a.tls != "none" else None
        with _command("connect", a.address):
            if a.tls == "implicit":
                self.conn = _POP3_SSL(a.host, a.port, timeout=a.timeout, context=ctx)
            else:
                self.conn = _POP3(a.host, a.port, timeout=a.timeout)
                if a.tls == "starttls":
                    self.conn.stls(ctx)
            if a.tls != "none":
                try:
                    a.check_peer(self.conn.sock)
                except TLSPinError as e:
                    raise SourceError("TLS", f"{e} ({a.address})", temporary=False) from None

    def close(self, quit: bool = True) -> None:
        """QUIT (which makes the DELEs of this session take effect) and close."""
        conn, self.conn = self.conn, None
        if conn is None:
            return
        try:
            if quit:
                with _command("QUIT", self.account.address):
                    conn.quit()
        finally:
            with contextlib.suppress(Exception):
                conn.close()

    # -- the Source protocol ---------------------------------------------------------
    def batches(self, run: "Run") -> "Iterator[Sequence[Fetched]]":
        a = self.account
        state = run.state
        delete = a.after == "delete" and not run.dry_run
        listing = self.listing()
        seen = state.pop3_seen(a.name)
        present = {uid for _, uid, _ in listing if uid is not None}
        if not run.dry_run and (present or not listing) and all(uid is not None for _, uid, _ in listing):
            state.pop3_forget(a.name, seen - present)
        if delete:
            # Recorded but still here: a run that stopped between recording and QUIT.
            self.delete([n for n, uid, _ in listing if uid is not None and uid in seen])
        todo = [(n, uid) for n, uid, _ in listing if uid is None or uid not in seen]
        run.expect(len(todo))
        counts: dict[str, int] = {}
        for i in range(0, len(todo), a.batch_size):
            batch = []
            for n, uid in todo[i:i + a.batch_size]:
                raw = self.retrieve(n)
                if uid is None:  # no UIDL and no TOP: the id comes from the headers we now have
                    uid = uid_for(raw, counts)
                    if uid in seen:
                        if delete:
                            self.delete([n])
                        run.step()
                        continue
                batch.append(Fetched(n, raw, uid))
            yield batch

    def ack(self, handles: "Sequence[Handle]") -> None:
        """Delivered and recorded: DELE with `after = "delete"` (the server removes them at QUIT)."""
        if self.account.after == "delete":
            self.delete([h for h in handles if isinstance(h, int)])   # message numbers

    def release(self, handles: "Sequence[Handle]") -> None:
        """Not delivered: nothing to do, RETR changed nothing."""

    # -- listing ------------------------------------------------------------------
    def listing(self) -> list[tuple[int, str | None, int]]:
        """[(message number, unique id or None, size)] of the maildrop.

        The id is the UIDL; a server without UIDL gets a digest of the headers (from TOP n 0), and
        None when it lacks TOP too (the id is then computed after RETR, see `uid_for()`).
        """
        where = self.account.address
        with _command("LIST", where):
            _, lines, _ = self.conn.list()
        sizes: dict[int, int] = {}
        for line in lines:
            parts = line.split()
            if len(parts) >= 2:
                sizes[int(parts[0])] = int(parts[1])
        uids: dict[int, str | None] = {}
        try:
            with _command("UIDL", where):
                try:
                    _, ulines, _ = self.conn.uidl()
                except poplib.error_proto:
                    ulines = None
            if ulines is None:
                raise _NoUidl
            for line in ulines:
                parts = line.split(None, 1)
                if len(parts) == 2:
                    uids[int(parts[0])] = parts[1].strip().decode("ascii", "replace")
        except _NoUidl:
            self.has_uidl = False
            counts: dict[str, int] = {}
            for n in sorted(sizes):
                try:
                    with _command(f"TOP {n} 0", where):
                        head = self.conn.top_raw(n, 0)
                except SourceError as e:
                    if "server said" not in e.detail:
                        raise
                    uids = {}
                    break
                uids[n] = self._unique(header_digest(head), counts)
        return [(n, uids.get(n), sizes[n]) for n in sorted(sizes)]

    @staticmethod
    def _unique(digest: str, counts: dict[str, int]) -> str:
        # Two messages with identical headers still need different ids.
        k = counts.get(digest, 0) + 1
        counts[digest] = k
        return f"hdr-{digest[:40]}" + (f"#{k}" if k > 1 else "")

    def retrieve(self, which: int) -> bytes:
        with _command(f"RETR {which}", self.account.address):
            return self.conn.retr_raw(which)

    def delete(self, numbers: list[int]) -> None:
        """DELE (effective at QUIT)."""
        for n in numbers:
            with _command(f"DELE {n}", self.account.address):
                self.conn.dele(n)


class _NoUidl(Exception):
    pass


def _sasl_one_step(conn, mech: str, blob: bytes) -> None:
    """AUTH with an initial response (RFC 5034). A "+ challenge" instead of +OK is the server's error
    report (XOAUTH2 sends JSON there): answer with an empty line and raise with both."""
    conn._putcmd(f"AUTH {mech} {base64.b64encode(blob).decode()}")
    resp, _ = conn._getline()
    if resp.startswith(b"+OK"):
        return
    detail = b""
    if resp.startswith(b"+"):
        with contextlib.suppress(ValueError):
            detail = base64.b64decode(resp[1:].strip(), validate=True)
        conn._putline(b"")
        resp, _ = conn._getline()
    raise poplib.error_proto(resp + (b" " + detail if detail else b""))


def uid_for(raw: bytes, counts: dict[str, int]) -> str:
    """The stand-in id of a message from a server with neither UIDL nor TOP."""
    return Pop3Source._unique(header_digest(raw), counts)
