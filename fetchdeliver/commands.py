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
    problems = rules_problems(data)
    for key, text in problems:
        print(f"error: {path}: {key}: {text}", file=sys.stderr)
    if problems:
        return EX_CONFIG
    accounts = data.get("account", [])
    print(f"{path}: OK ({len(accounts)} account(s))")
    return EX_OK


def rules_files(data: dict) -> list[tuple[str, str]]:
    """Every Sieve script the config names, as (key, path): delivery.rules, account[i].rules, ..."""
    out = []
    rules = (data.get("delivery") or {}).get("rules")
    if rules:
        out.append(("delivery.rules", rules))
    for table in ("account", "recipient"):
        for i, item in enumerate(data.get(table) or []):
            if item.get("rules"):
                out.append((f"{table}[{i}].rules", item["rules"]))
    return out


def rules_problems(data: dict) -> list[tuple[str, str]]:
    """(key, what is wrong) for each rules file that is missing, unreadable or does not compile.

    Delivery keeps every message in INBOX when its rules cannot be used (no mail is lost), so a
    missing file shows nowhere else: `config check` fails on it and the servers log it at start.
    """
    from fetchdeliver import sieve
    from fetchdeliver.pipeline import no_active_script

    seen: dict[str, str | None] = {}
    out = []
    for key, path in rules_files(data):
        if no_active_script(path):   # no active ManageSieve script yet: mail goes to INBOX, no error
            continue
        if path not in seen:
            problem = None
            try:
                sieve.compile_file(path, use_cache=False, options=data.get("sieve") or {})
            except OSError as e:
                problem = f"cannot read the rules file {path}: {e.strerror or e}"
            except Exception as e:  # report, do not crash: the user asked for a check
                problem = str(e)
            seen[path] = problem
        if seen[path]:
            out.append((key, seen[path]))
    return out
