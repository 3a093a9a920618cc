"""`fetchdeliver lmtp`: run the LMTP server until SIGTERM / SIGINT.

    fetchdeliver lmtp --listen 127.0.0.1:2424 [-c CONFIG]
    fetchdeliver lmtp --socket /run/fetchdeliver/lmtp [-c CONFIG]

Without --listen / --socket the [lmtp] table's `listen` or `socket` is used.
Once listening it prints "listening on WHERE" to stderr (with port 0, the port
the kernel chose). The outbound queue runs in the same process, so redirect and
vacation mail leaves without a separate `queue flush`.

With `--processes N` (or `[lmtp] processes`; default one per CPU, up to 4) the
socket is bound once and N-1 children are forked; the parent accepts every
connection and hands it to the least busy process, as Dovecot runs one process
per connection: deliveries then use every core. The parent alone works the outbound
queue; a child that queues mail wakes it with SIGUSR1. SIGTERM to the parent
stops every process after its deliveries in flight.
"""

from __future__ import annotations

import logging
import sys

from fetchdeliver.errors import EX_OK, EX_OSERR, EX_USAGE

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket

    from fetchdeliver.netlimits import Slot

log = logging.getLogger("fetchdeliver.lmtp")


def add_arguments(p) -> None:
    """The sub-command's options (cli.py builds the parser; `python -m` uses the same)."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--listen", metavar="HOST:PORT", help="TCP address to listen on (e.g. 127.0.0.1:2424)")
    g.add_argument("--socket", metavar="PATH", help="Unix socket to listen on")
    p.add_argument("--processes", type=int, metavar="N",
                   help="processes serving connections (default: [lmtp] processes, else one per CPU up to 4)")
    p.add_argument("-c", "--config", help="config file (default: $XDG_CONFIG_HOME/fetchdeliver/config.toml)")
    p.add_argument("--socket-owner", metavar="USER", help="owner of the Unix socket (default: [lmtp] socket_owner)")
    p.add_argument("--socket-group", metavar="GROUP", help="group of the Unix socket (default: [lmtp] socket_group)")
    p.add_argument("--socket-mode", metavar="MODE", help="mode of the Unix socket, e.g. 0660 (the default)")


def main(args) -> int:
    import asyncio
    import logging
    import signal

    from fetchdeliver.config import load_settings, report_config_error
    from fetchdeliver.errors import ConfigError
    from fetchdeliver.recipients import parse_listen

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="fetchdeliver lmtp: %(levelname)s: %(message)s")
    quiet_protocol_trace(int(getattr(args, "verbose", 0) or 0))
    try:
        settings = load_settings(args.config)
        path = settings.file
        table = settings.data.get("lmtp") or {}
        listen, sock = args.listen, args.socket
        if not listen and not sock:
            listen, sock = table.get("listen"), table.get("socket")
        if not listen and not sock:
            sys.stderr.write("fetchdeliver lmtp: give --listen HOST:PORT or --socket PATH "
                             f"(or set listen / socket in [lmtp] of {path})\n")
            return EX_USAGE
        if listen:
            try:
                parse_listen(listen)
            except ValueError as e:
                sys.stderr.write(f"fetchdeliver lmtp: --listen: {e}\n")
                return EX_USAGE
        from fetchdeliver.outbound.queue import OutboundQueue, QueueRunner
        from fetchdeliver.sources.lmtp import LMTPService, serve

        queue = OutboundQueue.from_settings(settings)
        service = LMTPService(settings, outbound=queue)
        for key in ("socket_owner", "socket_group", "socket_mode"):
            value = getattr(args, key, None)
            if value is not None:
                if key == "socket_mode":
                    from fetchdeliver.recipients import socket_mode

                    try:
                        value = socket_mode(value)
                    except ValueError as e:
                        sys.stderr.write(f"fetchdeliver lmtp: --socket-mode: {e}\n")
                        return EX_USAGE
                service.options[key] = value
        service.check()
    except ConfigError as e:
        return report_config_error("fetchdeliver lmtp", e)

    processes = getattr(args, "processes", None) or table.get("processes") or default_processes()
    if processes < 1:
        sys.stderr.write("fetchdeliver lmtp: --processes must be at least 1\n")
        return EX_USAGE
    if processes > 1:
        # Installed before any child exists: a child's SIGUSR1 must never find the default action.
        signal.signal(signal.SIGUSR1, lambda *_: queue.wakeup.set())
    try:
        bound = _bind(listen, sock, service.options) if processes > 1 else None
    except OSError as e:
        sys.stderr.write(f"fetchdeliver lmtp: cannot listen on {sock or listen}: {e.strerror or e}\n")
        return EX_OSERR
    # The caps count the connections of every process: the parent accepts them all.
    total = table.get("max_connections") or service.options["max_sessions"] * processes
    if not table.get("max_connections"):
        from fetchdeliver.netlimits import fit_max_connections

        total = min(total, fit_max_connections(None, "lmtp"))
    service.limits.max_total = total
    service.limits.max_per_ip = table.get("max_connections_per_ip") or total
    children = _fork_children(processes - 1, bound, service, queue) if bound is not None else []

    runner = QueueRunner(queue)
    runner.start()

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGUSR1, queue.wakeup.set)  # a child queued mail

        def ready(where: str) -> None:
            sys.stderr.write(f"fetchdeliver lmtp: listening on {where}"
                             + (f" ({processes} processes)" if children else "") + "\n")
            sys.stderr.flush()

        if bound is None:
            await serve(service, listen=listen, socket_path=sock, stop=stop, on_ready=ready)
            return
        name = bound.getsockname()
        ready(name if isinstance(name, str) else f"{name[0]}:{name[1]}")
        await _dispatch(service, bound, children, stop)

    try:
        asyncio.run(run())
    except OSError as e:
        sys.stderr.write(f"fetchdeliver lmtp: cannot listen on {sock or listen}: {e.strerror or e}\n")
        return EX_OSERR
    finally:
        if sock and bound is not None:
            from fetchdeliver.sources.lmtp import remove_socket

            remove_socket(sock)  # the single-process server removes its own in close()
        _stop_children(children)
        service.shutdown()  # deliveries in progress finish before we exit
        runner.stop()
    return EX_OK


def quiet_protocol_trace(verbose: int) -> None:
    """A server logs one line per delivered recipient by default (like Postfix's status=sent lines);
    aiosmtpd's line-by-line protocol trace (logger "mail.log") only at -vv (debug)."""
    import logging

    for name in ("fetchdeliver.sources.lmtp", "fetchdeliver.lmtp"):
        lg = logging.getLogger(name)
        if lg.getEffectiveLevel() > logging.INFO:
            lg.setLevel(logging.INFO)
    logging.getLogger("mail.log").setLevel(logging.DEBUG if verbose >= 2 else logging.WARNING)


def default_processes() -> int:
    """One process per CPU, up to 4: deliveries wait on fsync and Python runs one thread at a time."""
    import os

    return max(1, min(4, os.cpu_count() or 1))


def _bind(listen: str | None, sock_path: str | None, options: dict | None = None):
    """The listening socket, bound once before the children are forked."""
    import socket

    if sock_path:
        from fetchdeliver.sources.lmtp import DEFAULT_SOCKET_MODE, prepare_socket_path, set_socket_access

        o = options or {}
        prepare_socket_path(sock_path)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(sock_path)
        try:
            set_socket_access(sock_path, o.get("socket_owner"), o.get("socket_group"),
                              o.get("socket_mode", DEFAULT_SOCKET_MODE))
        except OSError:
            from fetchdeliver.sources.lmtp import remove_socket

            s.close()
            remove_socket(sock_path)
            raise
    else:
        from fetchdeliver.recipients import parse_listen

        host, port = parse_listen(listen or "127.0.0.1:2424")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
    s.listen(512)
    s.setblocking(False)
    return s


class _WakeParent:
    """Stands in for the queue's wake-up event in a child: tells the parent's queue runner."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def set(self) -> None:
        import os
        import signal

        try:
            os.kill(self.pid, signal.SIGUSR1)
        except ProcessLookupError:
            pass

    def clear(self) -> None:
        pass


def _fork_children(n: int, lsock, service, queue) -> list[tuple[int, socket.socket]]:
    """Fork `n` children; each serves the connections the parent hands it over a socketpair.

    The parent accepts every connection and gives it to the process with the fewest
    sessions (itself included), so four clients on two processes are served two and two,
    which accepting on a shared socket does not guarantee.
    """
    import os
    import socket
    import threading

    parent = os.getpid()
    children = []
    for _ in range(n):
        # SOCK_SEQPACKET: each hand-over ("c" + id, with the descriptor) and each "d" + id (the session
        # with that id ended) arrives as one message.
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid:
            theirs.close()
            ours.setblocking(False)
            children.append((pid, ours))
            continue
        code = 70
        try:
            ours.close()
            lsock.close()
            for _pid, other in children:
                other.close()
            queue._local = threading.local()   # no sqlite connection crosses a fork
            queue.wakeup = _WakeParent(parent)
            code = _child(theirs, service)
        finally:
            os._exit(code)
    return children


def _child(chan, service) -> int:
    import asyncio
    import os
    import signal
    import socket

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGUSR1, lambda: None)
        chan.setblocking(False)

        class Ended:
            """The parent's slot for a connection it handed us: released by telling it the id."""

            def __init__(self, ident: bytes) -> None:
                self.ident = ident
                self.held = True

            def release(self) -> None:
                if self.held:
                    self.held = False
                    self.tell()

            def tell(self) -> None:
                try:
                    chan.send(b"d" + self.ident)
                except (BlockingIOError, InterruptedError):
                    loop.call_later(0.05, self.tell)   # the parent is busy: its count must still drop
                except OSError:
                    pass   # the parent is gone

        def handed() -> None:
            try:
                msg, fds, _flags, _addr = socket.recv_fds(chan, 64, 16)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                msg, fds = b"", []
            if not msg and not fds:
                stop.set()  # the parent is gone: finish what runs, then exit
                return
            slot = Ended(msg[1:])
            if not fds:  # the descriptor did not arrive (we are out of them): the parent must not wait for it
                slot.release()
                return
            for extra in fds[1:]:
                os.close(extra)
            asyncio.ensure_future(service.serve_connection(socket.socket(fileno=fds[0]), slot))

        loop.add_reader(chan.fileno(), handed)
        await stop.wait()
        loop.remove_reader(chan.fileno())

    try:
        asyncio.run(run())
    finally:
        service.shutdown()
    return EX_OK


async def _dispatch(service, lsock, children, stop) -> None:
    """The parent's loop with children: accept within the caps, hand each connection to the least busy process."""
    import asyncio
    import itertools
    import socket

    loop = asyncio.get_running_loop()
    load = [0] * (len(children) + 1)       # sessions per process; 0 is this one
    alive = [True] * (len(children) + 1)
    handed: dict[bytes, tuple[int, Slot]] = {}   # id -> (process, netlimits.Slot) of connections in children
    ids = itertools.count(1)

    class Here:
        """A connection served by the parent: its slot, and the parent's own load."""

        def __init__(self, slot) -> None:
            self.slot = slot
            self.held = True

        def release(self) -> None:
            if self.held:
                self.held = False
                load[0] -= 1
                self.slot.release()

    def on_socket(conn, slot) -> None:
        i = min((k for k in range(len(load)) if alive[k]), key=load.__getitem__)
        load[i] += 1
        if i:
            ident = b"%016x" % next(ids)
            try:
                socket.send_fds(children[i - 1][1], [b"c" + ident], [conn.fileno()])
                handed[ident] = (i, slot)
                conn.close()
                return
            except OSError:
                alive[i] = False
                load[i] -= 1
                load[0] += 1
        asyncio.ensure_future(service.serve_connection(conn, Here(slot)))

    def done(i: int) -> None:
        chan = children[i - 1][1]
        try:
            data = chan.recv(64)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            alive[i] = False       # the child exited: serve without it; its connections are gone
            loop.remove_reader(chan.fileno())
            for ident, (k, slot) in list(handed.items()):
                if k == i:
                    del handed[ident]
                    slot.release()
            return
        entry = handed.pop(data[1:], None)
        if entry is not None:
            load[i] -= 1
            entry[1].release()

    listener = service.listener(lsock, on_socket).start()
    for i, (_pid, chan) in enumerate(children, 1):
        loop.add_reader(chan.fileno(), done, i)
    await stop.wait()
    listener.close()


def _stop_children(children) -> None:
    import os
    import signal

    for pid, _chan in children:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for pid, chan in children:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
        chan.close()


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="fetchdeliver lmtp", description="LMTP server (RFC 2033)")
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
