"""`fetchdeliver daemon` and `fetchdeliver status` (argument parsing only; the work is imported on use)."""

from __future__ import annotations


def add_daemon_arguments(p) -> None:
    p.add_argument("-c", "--config", help="config file (default: $XDG_CONFIG_HOME/fetchdeliver/config.toml)")
    p.add_argument("--log-format", choices=("text", "json"), default="text",
                   help="text (journald-style under systemd) or JSON lines")


def add_status_arguments(p) -> None:
    p.add_argument("-c", "--config", help="config file (default: $XDG_CONFIG_HOME/fetchdeliver/config.toml)")
    p.add_argument("--json", action="store_true", help="print the status as JSON")


def daemon_main(args) -> int:
    """Run every configured account, listener and the spool until SIGTERM/SIGINT."""
    from fetchdeliver.config import default_config_path
    from fetchdeliver.daemon import logsetup, service

    logsetup.setup(args.log_format, int(getattr(args, "verbose", 0) or 0))
    code = service.run(args.config or default_config_path())
    service.exit_now(code)
    return code


def status_main(args) -> int:
    """Print per-account poll results, the queue length and the listeners from the state database."""
    from fetchdeliver.daemon import status

    return status.main(args)
