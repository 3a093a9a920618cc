"""Real SMTP peers for the outbound tests: aiosmtpd sinks (STARTTLS, implicit TLS, AUTH) and a
small dnspython DNS responder, all on loopback addresses with ephemeral ports, stopped by the test."""

from __future__ import annotations

import socket
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult


class Received:
    __slots__ = ("mail_from", "rcpt_tos", "data", "tls", "auth")

    def __init__(self, mail_from, rcpt_tos, data, tls, auth) -> None:
        self.mail_from, self.rcpt_tos, self.data, self.tls, self.auth = mail_from, rcpt_tos, data, tls, auth

    def __repr__(self) -> str:
        return f"Received({self.mail_from!r} -> {self.rcpt_tos!r}, {len(self.data)} bytes)"


class SinkHandler:
    """Records every accepted message; `rcpt_policy(address) -> None | "4xx ..." | "5xx ..."`."""

    def __init__(self, rcpt_policy=None) -> None:
        self.messages: list[Received] = []
        self.rcpt_attempts: list[str] = []
        self.rcpt_policy = rcpt_policy
        self.lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        with self.lock:
            self.rcpt_attempts.append(address)
        answer = self.rcpt_policy(address) if self.rcpt_policy else None
        if answer:
            return answer
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content,
                                          server.transport.get_extra_info("ssl_object") is not None, session.auth_data))
        return "250 2.0.0 Ok: queued"


class Sink:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, rcpt_policy=None, starttls_context=None,
                 implicit_context=None, users: dict[str, str] | None = None) -> None:
        self.handler = SinkHandler(rcpt_policy)
        self.host = host
        self.port = port or free_port(host)
        kwargs = {"hostname": host, "port": self.port}
        server_kwargs = {"ident": "test sink"}
        if starttls_context is not None:
            server_kwargs.update(tls_context=starttls_context, require_starttls=True)
        if users is not None:
            def authenticator(server, session, envelope, mechanism, auth_data):
                user = auth_data.login.decode()
                ok = users.get(user) == auth_data.password.decode()
                return AuthResult(success=ok, handled=False, auth_data=user if ok else None)
            server_kwargs.update(authenticator=authenticator, auth_required=True,
                                 # with implicit TLS aiosmtpd does not know the transport is encrypted
                                 auth_require_tls=starttls_context is not None)
        if implicit_context is not None:
            kwargs["ssl_context"] = implicit_context
        self.controller = Controller(self.handler, server_hostname="sink.test", ready_timeout=30,
                                     **kwargs, **server_kwargs)
        self.controller.start()

    @property
    def messages(self) -> list[Received]:
        return self.handler.messages

    def stop(self) -> None:
        self.controller.stop()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_free_on(hosts: list[str]) -> int:
    """One port number free on every address in `hosts` right now (MX hosts share the SMTP port)."""
    for _ in range(50):
        port = free_port(hosts[0])
        socks = []
        try:
            for h in hosts:
                s = socket.socket()
                socks.append(s)
                s.bind((h, port))
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no common free port on {hosts}")


class DNSResponder:
    """A UDP DNS server for a tiny zone: {(name, type): [rdata text]}; other names are NXDOMAIN."""

    def __init__(self, records: dict[tuple[str, str], list[str]]) -> None:
        import dns.name

        self.records = {(dns.name.from_text(n).to_text().lower(), t.upper()): v for (n, t), v in records.items()}
        self.names = {n for n, _t in self.records}
        self.queries: list[tuple[str, str]] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _serve(self) -> None:
        import dns.message
        import dns.rcode
        import dns.rdataclass
        import dns.rdatatype
        import dns.rrset

        while not self._stop:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            if self._stop:
                return
            try:
                q = dns.message.from_wire(data)
            except Exception:
                continue
            r = dns.message.make_response(q)
            r.flags |= 0x0400  # AA
            for question in q.question:
                name = question.name.to_text().lower()
                rdtype = dns.rdatatype.to_text(question.rdtype)
                self.queries.append((name, rdtype))
                values = self.records.get((name, rdtype))
                if values:
                    r.answer.append(dns.rrset.from_text_list(question.name, 60, dns.rdataclass.IN, rdtype, values))
                elif name not in self.names:
                    r.set_rcode(dns.rcode.NXDOMAIN)
            self.sock.sendto(r.to_wire(), peer)

    def stop(self) -> None:
        self._stop = True
        try:  # wake recvfrom
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(b"\0", ("127.0.0.1", self.port))
        except OSError:
            pass
        self.thread.join(10)
        self.sock.close()
