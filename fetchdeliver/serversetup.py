"""Set-up shared by the servers' commands (imap, pop3, managesieve, submission, web): the
`--listen/--tls-listen/--cert/--key` overrides of a config table, the TLS context from its cert/key,
the logins (the table's `backend`/`passwd_file`, else [imap]'s) and [delivery]'s default mail location.

`table` is the server's config table name ("pop3", "managesieve", ...): errors name it in their key."""

from __future__ import annotations

import os
from typing import Any, Callable, TypeVar

from fetchdeliver.errors import ConfigError



def load_config(path: str | None, *schemas: str) -> dict:
    """The config at `path` (or the default one; {} when that does not exist), validated with the
    tables of `schemas` (module names that register them) as well as [imap]'s: config.load_settings."""
    from fetchdeliver.config import load_settings

    return load_settings(path, required=False, tables=("fetchdeliver.imapserver.settings", *schemas)).data


def apply_flags(args: Any, t: dict, addresses: Callable[[Any, str], list[str]]) -> None:
    """Put the command-line `--listen/--tls-listen` (parsed by the table's `addresses`) and
    `--cert/--key` (made absolute) into the merged table `t`: the flags win over the file."""
    for opt in ("listen", "tls_listen"):
        if getattr(args, opt, None):
            try:
                t[opt] = addresses(getattr(args, opt), "command line")
            except ValueError as e:
                raise ConfigError(str(e), key=f"--{opt.replace('_', '-')}") from None
    for opt in ("cert", "key"):
        if getattr(args, opt, None):
            t[opt] = os.path.abspath(getattr(args, opt))


def check_cert_key(t: dict, table: str) -> None:
    """Both cert and key or neither; tls_listen only with them."""
    if bool(t.get("cert")) != bool(t.get("key")):
        raise ConfigError("give both a certificate and a key (--cert F --key F)", key=f"{table}.cert")
    if t.get("tls_listen") and not t.get("cert"):
        raise ConfigError("--tls-listen / tls_listen needs --cert and --key", key=f"{table}.tls_listen")


def ssl_context(cert: str, key: str, table: str):
    """A server-side ssl.SSLContext with cert/key loaded (a ConfigError naming `table`.cert if not)."""
    import ssl

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"cannot load certificate {cert} / key {key}: {e}", key=f"{table}.cert") from None
    return ctx


def tls_context(t: dict, table: str):
    """The merged table's TLS context (None without cert/key), after check_cert_key."""
    check_cert_key(t, table)
    return ssl_context(t["cert"], t["key"], table) if t.get("cert") else None


def authenticator_for(t: dict, data: dict, table: str,
                      hint: str = "set passwd_file here or in [imap]"):
    """The logins: this table's backend / passwd_file, else [imap]'s (a passwd_file here overrides
    [imap]'s backend). The passwd-file is read now, so a bad one fails with its name at start-up."""
    imap = data.get("imap", {})
    backend = t.get("backend") or (None if t.get("passwd_file") else imap.get("backend"))
    passwd_file = t.get("passwd_file") or imap.get("passwd_file")
    if backend:
        from fetchdeliver.imapserver.plugin import load_backend

        return load_backend(backend, data)
    if passwd_file:
        from fetchdeliver.imapserver.auth import PasswdFileAuthenticator

        a = PasswdFileAuthenticator(passwd_file)
        a.users()  # fail now, with the file name, rather than at the first login
        return a
    raise ConfigError(f"no users: {hint} (create entries with `fetchdeliver passwd USER`)",
                      key=f"{table}.passwd_file")


def default_mail(data: dict) -> str | None:
    """[delivery]'s store as a mail location, for users whose passwd-file entry names none."""
    delivery = data.get("delivery", {})
    if delivery.get("maildir"):
        return "maildir:" + delivery["maildir"]
    if delivery.get("mbox"):
        return "mbox:" + (f"{delivery['mbox_folders']}:INBOX={delivery['mbox']}"
                          if delivery.get("mbox_folders") else delivery["mbox"])
    return None


_T = TypeVar("_T", bound="ThreadedServer")


class ThreadedServer:
    """A server (anything with async start()/stop() and .addresses) on its own event loop in a
    background thread, for tests, benchmarks and embedding. Each server package subclasses it with
    its own constructor, thread name and stop timeout."""

    def __init__(self, server: Any, name: str, stop_timeout: float = 15) -> None:
        import asyncio  # here, not at the top: the command modules import this one at CLI start-up
        import threading

        self.server = server
        self.stop_timeout = stop_timeout
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        import asyncio

        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.server.start())
        except BaseException as e:
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()

    def start(self: _T) -> _T:
        self.thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error
        return self

    @property
    def addresses(self):
        return self.server.addresses

    def port(self, tls: bool = False) -> int:
        return next(p for _h, p, t in self.server.addresses if t == tls)

    def stop(self) -> None:
        if not self.thread.is_alive():
            return
        import asyncio

        fut = asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop)
        try:
            fut.result(self.stop_timeout)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(15)


async def serve_until_signal(prog: str, make_server: Callable[[], Any],
                             on_started: Callable[[], None] | None = None) -> int:
    """Make and start a server, print where it listens ("fetchdeliver PROG: listening on ..."), serve
    until SIGINT/SIGTERM, stop it. A ConfigError at start-up is printed and gives EX_CONFIG.
    `on_started` runs once the server listens (submission starts its queue runner there)."""
    import asyncio
    import signal
    import sys

    from fetchdeliver.errors import EX_OK

    try:
        server = make_server()
        addrs = await server.start()
    except ConfigError as e:
        from fetchdeliver.config import report_config_error

        return report_config_error(prog, e)
    if on_started is not None:
        on_started()
    for host, port, tls in addrs:
        print(f"{prog}: listening on {host}:{port}{' (TLS)' if tls else ''}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    serving = asyncio.ensure_future(server.serve_forever())
    await stop.wait()
    serving.cancel()
    await server.stop()
    return EX_OK


async def stop_listening(listeners, sessions) -> None:
    """Close the netlimits listeners, cancel the running sessions and wait up to 5 s for them
    (imap, pop3 and managesieve Server.stop(); each then releases its own resources)."""
    import asyncio

    for lst in listeners:
        lst.close()
    for t in list(sessions):
        t.cancel()
    if sessions:
        await asyncio.wait(list(sessions), timeout=5)
