"""Small sub-commands that do not deserve a module of their own."""

from __future__ import annotations

import sys

from fetchdeliver.errors import EX_CONFIG, EX_OK


def config_check(path: str | None) -> int:
    """`fetchdeliver config check`: validate the config; print every problem with file and key."""
    from fetchdeliver.config import ConfigError, ConfigErrors, default_config_path, parse_file

    path = path or default_config_path()
    try:
        data = parse_file(path)
    except ConfigErrors as e:
        for err in e.errors:
            print(f"error: {err}", file=sys.stderr)
        return EX_CONFIG
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return EX_CONFIG
    rules = data.get("delivery", {}).get("rules")
    from fetchdeliver.pipeline import no_active_script

    if rules and not no_active_script(rules):   # no active ManageSieve script yet is fine
        from fetchdeliver import sieve

        try:
            sieve.compile_file(rules, use_cache=False, options=data.get("sieve", {}))
        except Exception as e:  # report, do not crash: the user asked for a check
            print(f"error: {path}: delivery.rules: {e}", file=sys.stderr)
            return EX_CONFIG
    accounts = data.get("account", [])
    print(f"{path}: OK ({len(accounts)} account(s))")
    return EX_OK
