"""`fetchdeliver lmtp`: run the LMTP server until SIGTERM / SIGINT.

    fetchdeliver lmtp --listen 127.0.0.1:2424 [-c CONFIG]
    fetchdeliver lmtp --socket /run/fetchdeliver/lmtp [-c CONFIG]

Without --listen / --socket the [lmtp] table's `listen` or `socket` is used.
Once listening it prints "listening on WHERE" to stderr (with port 0, the port
the kernel chose). The outbound queue runs in the same process, so redirect and
vacation mail leaves without a separate `queue flush`.

With `--processes N` (or `[lmtp] processes`; default one per CPU, up to 4) the
socket is bound once and N-1 children are forked (fetchdeliver/sources/lmtp_prefork.py).
"""

from __future__ import annotations

import logging
import sys

from fetchdeliver.errors import EX_OK, EX_OSERR, EX_USAGE

TYPE_CHECKING = False
if TYPE_CHECKING:

    pass

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

    from fetchdeliver.sources.lmtp_prefork import (bind_listener, default_processes, dispatch, fork_children,
                                                   stop_children)

    processes = getattr(args, "processes", None) or table.get("processes") or default_processes()
    if processes < 1:
        sys.stderr.write("fetchdeliver lmtp: --processes must be at least 1\n")
        return EX_USAGE
    if processes > 1:
        # Installed before any child exists: a child's SIGUSR1 must never find the default action.
        signal.signal(signal.SIGUSR1, lambda *_: queue.wakeup.set())
    try:
        bound = bind_listener(listen, sock, service.options) if processes > 1 else None
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
    children = fork_children(processes - 1, bound, service, queue) if bound is not None else []

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
        await dispatch(service, bound, children, stop)

    try:
        asyncio.run(run())
    except OSError as e:
        sys.stderr.write(f"fetchdeliver lmtp: cannot listen on {sock or listen}: {e.strerror or e}\n")
        return EX_OSERR
    finally:
        if sock and bound is not None:
            from fetchdeliver.sources.lmtp import remove_socket

            remove_socket(sock)  # the single-process server removes its own in close()
        stop_children(children)
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


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="fetchdeliver lmtp", description="LMTP server (RFC 2033)")
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
