"""`fetchdeliver lmtp`: run the LMTP server until SIGTERM / SIGINT.

    fetchdeliver lmtp --listen 127.0.0.1:2424 [-c CONFIG]
    fetchdeliver lmtp --socket /run/fetchdeliver/lmtp [-c CONFIG]

Without --listen / --socket the [lmtp] table's `listen` or `socket` is used.
Once listening it prints "listening on WHERE" to stderr (with port 0, the port
the kernel chose). The outbound queue runs in the same process, so redirect and
vacation mail leaves without a separate `queue flush`.
"""

from __future__ import annotations

import sys

from fetchdeliver.errors import EX_CONFIG, EX_OK, EX_OSERR, EX_USAGE


def add_arguments(p) -> None:
    """The sub-command's options (cli.py builds the parser; `python -m` uses the same)."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--listen", metavar="HOST:PORT", help="TCP address to listen on (e.g. 127.0.0.1:2424)")
    g.add_argument("--socket", metavar="PATH", help="Unix socket to listen on")
    p.add_argument("-c", "--config", help="config file (default: $XDG_CONFIG_HOME/fetchdeliver/config.toml)")


def main(args) -> int:
    import asyncio
    import logging
    import signal

    from fetchdeliver.config import Settings, default_config_path, load
    from fetchdeliver.errors import ConfigError
    from fetchdeliver.recipients import parse_listen

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="fetchdeliver lmtp: %(levelname)s: %(message)s")
    path = args.config or default_config_path()
    try:
        settings = Settings(load(path), path)
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
        service.check()
    except ConfigError as e:
        sys.stderr.write(f"fetchdeliver lmtp: {e}\n")
        return EX_CONFIG

    runner = QueueRunner(queue)
    runner.start()

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

        def ready(where: str) -> None:
            sys.stderr.write(f"fetchdeliver lmtp: listening on {where}\n")
            sys.stderr.flush()

        await serve(service, listen=listen, socket_path=sock, stop=stop, on_ready=ready)

    try:
        asyncio.run(run())
    except OSError as e:
        sys.stderr.write(f"fetchdeliver lmtp: cannot listen on {sock or listen}: {e.strerror or e}\n")
        return EX_OSERR
    finally:
        service.shutdown()  # deliveries in progress finish before we exit
        runner.stop()
    return EX_OK


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="fetchdeliver lmtp", description="LMTP server (RFC 2033)")
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
