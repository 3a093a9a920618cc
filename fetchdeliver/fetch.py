"""`fetchdeliver fetch`: one pass over the configured accounts, every message delivered exactly once.

This module is the command (config, account selection, the state database, the
exit code); each account is run by fetchdeliver.sources.runner.AccountRun, whose
docstring gives the safety order, through the Source its protocol names.
"""

from __future__ import annotations

import sys

from fetchdeliver.errors import EX_CONFIG, EX_OK, EX_USAGE, ConfigError

EX_FAILED = 1


def main(args) -> int:
    """Entry point of `fetchdeliver fetch` (args.config, args.accounts, args.dry_run, args.verbose)."""
    from fetchdeliver.sources import accounts as accounts_mod
    from fetchdeliver.config import load_settings, report_config_error

    if getattr(args, "verbose", False):
        import logging

        logging.getLogger("fetchdeliver").setLevel(logging.INFO)
    try:
        settings = load_settings(args.config)
    except ConfigError as e:
        return report_config_error("fetchdeliver: error", e)
    path = settings.file
    every = accounts_mod.from_settings(settings)
    if not every:
        print(f"fetchdeliver: error: {path}: no [[account]] configured", file=sys.stderr)
        return EX_CONFIG
    chosen = every
    if args.accounts:
        by_name = {a.name: a for a in every}
        unknown = [n for n in args.accounts if n not in by_name]
        if unknown:
            print(f"fetchdeliver: error: no account named {', '.join(repr(n) for n in unknown)} in {path} "
                  f"(accounts: {', '.join(by_name)})", file=sys.stderr)
            return EX_USAGE
        chosen = [by_name[n] for n in dict.fromkeys(args.accounts)]

    from fetchdeliver.sources.runner import AccountRun
    from fetchdeliver.state import StateError, open_state

    try:
        state = open_state(settings)   # PostgreSQL with [storage] url, else sqlite
    except StateError as e:
        print(f"fetchdeliver: error: {e}", file=sys.stderr)
        return EX_FAILED
    ok = True
    try:
        contexts: dict = {}
        for account in chosen:
            run = AccountRun(account, settings, state, dry_run=bool(args.dry_run),
                             verbose=bool(getattr(args, "verbose", False)), contexts=contexts)
            ok = run.run() and ok
    finally:
        state.close()
    return EX_OK if ok else EX_FAILED
