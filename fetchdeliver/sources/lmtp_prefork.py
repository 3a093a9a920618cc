"""The LMTP source's pre-fork model: one listening socket, N-1 forked children, the parent dispatching.

The socket is bound once and N-1 children are forked; the parent accepts every
connection and hands it to the least busy process (over a socketpair, with the
descriptor), as Dovecot runs one process per connection: deliveries then use every
core. The parent alone works the outbound queue; a child that queues mail wakes it
with SIGUSR1. SIGTERM to the parent stops every process after its deliveries in flight.
Used by `fetchdeliver lmtp --processes N` (fetchdeliver/lmtp_command.py).
"""

from __future__ import annotations

from fetchdeliver.errors import EX_OK

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket

    from fetchdeliver.netlimits import Slot


def default_processes() -> int:
    """One process per CPU, up to 4: deliveries wait on fsync and Python runs one thread at a time."""
    import os

    return max(1, min(4, os.cpu_count() or 1))


def bind_listener(listen: str | None, sock_path: str | None, options: dict | None = None):
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
        s = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)   # asyncio sets TCP_NODELAY only then
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
    s.listen(512)
    s.setblocking(False)
    return s


class WakeParent:
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


def fork_children(n: int, lsock, service, queue) -> list[tuple[int, socket.socket]]:
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
            queue.wakeup = WakeParent(parent)
            code = serve_child(theirs, service)
        finally:
            os._exit(code)
    return children


def serve_child(chan, service) -> int:
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


async def dispatch(service, lsock, children, stop) -> None:
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


def stop_children(children) -> None:
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
