"""`fetchdeliver queue list | flush | remove ID`: look at and work the outbound queue."""

from __future__ import annotations

import sys

from fetchdeliver.errors import EX_NOINPUT, EX_OK, EX_TEMPFAIL, EX_USAGE


def add_arguments(p) -> None:
    """The sub-command's options (cli.py builds the parser; `python -m` uses the same)."""
    import argparse

    config_help = "config file (default: $XDG_CONFIG_HOME/fetchdeliver/config.toml)"
    p.add_argument("-c", "--config", help=config_help)
    sub = p.add_subparsers(dest="queue_command", metavar="ACTION")
    actions = [sub.add_parser("list", help="show queued messages"),
               sub.add_parser("flush", help="try to send every queued message now")]
    r = sub.add_parser("remove", help="delete a queued message without sending it")
    r.add_argument("id", metavar="ID")
    actions.append(r)
    for a in actions:
        # `queue list -c C` as well as `queue -c C list`, like every other sub-command
        a.add_argument("-c", "--config", default=argparse.SUPPRESS, help=config_help)


def _age(seconds: float) -> str:
    s = int(max(0, seconds))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600}h"


def main(args) -> int:
    import time

    from fetchdeliver.config import load_settings, report_config_error
    from fetchdeliver.errors import ConfigError

    try:
        settings = load_settings(getattr(args, "config", None), required=False)
    except ConfigError as e:
        return report_config_error("fetchdeliver queue", e)
    from fetchdeliver.outbound.queue import OutboundQueue, QueueError

    cmd = getattr(args, "queue_command", None)
    if cmd not in ("list", "flush", "remove"):
        sys.stderr.write("usage: fetchdeliver queue [-c CONFIG] {list,flush,remove ID}\n")
        return EX_USAGE
    try:
        queue = OutboundQueue.from_settings(settings)
        if cmd == "list":
            items = queue.items()
            now = time.time()
            for it in items:
                nxt = "now" if it.next_attempt <= now else f"in {_age(it.next_attempt - now)}"
                print(f"{it.id}  {it.kind:8}  {it.size:>8}  age {_age(now - it.created):>6}  "
                      f"tries {it.attempts}  next {nxt}")
                print(f"    <{it.sender}> -> <{it.recipient}>")
                if it.last_error:
                    print(f"    last error: {it.last_error}")
            print(f"{len(items)} message(s) in the queue" if items else "the queue is empty")
            return EX_OK
        if cmd == "remove":
            if queue.remove(args.id):
                print(f"removed {args.id}")
                return EX_OK
            sys.stderr.write(f"fetchdeliver queue: no queued message with id {args.id!r} "
                             "(see `fetchdeliver queue list`)\n")
            return EX_NOINPUT
        counts = queue.run_once(flush=True)
        # Bounces and delay notices made by this run go out in the same run.
        for _ in range(3):
            more = queue.run_once()
            if not any(more.values()):
                break
            for k, v in more.items():
                counts[k] += v
        print(", ".join(f"{v} {k}" for k, v in counts.items()))
        left = len(queue.items())
        if left:
            print(f"{left} message(s) still queued")
        return EX_OK if counts["deferred"] == 0 else EX_TEMPFAIL
    except QueueError as e:
        sys.stderr.write(f"fetchdeliver queue: {e}\n")
        return EX_TEMPFAIL


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="fetchdeliver queue", description="the outbound SMTP queue")
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
