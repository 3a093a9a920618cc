"""`fetchdeliver demo`: deliver the sample messages through the sample rules into a fresh Maildir.

Needs no setup and touches nothing outside the folder it creates (a new
temporary folder unless --dir is given). It runs the same engine as `deliver`.
"""

from __future__ import annotations

import os
import sys


def _read_envelopes(path: str) -> list[tuple[str, str, str]]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, sender, rcpt = line.split()
            rows.append((name, sender, rcpt))
    return rows


def run_demo(target_dir: str, out=sys.stdout) -> list[tuple[str, str, list[str]]]:
    """Deliver every sample message; return (file, status, where) per message."""
    from fetchdeliver import engine
    from fetchdeliver.config import Settings
    from fetchdeliver.message import Message
    from fetchdeliver.pipeline import build_context
    from fetchdeliver.resources import examples_dir

    ex = examples_dir()
    rules = os.path.join(ex, "rules.sieve")
    maildir = os.path.join(target_dir, "Mail")
    settings = Settings({"delivery": {"maildir": maildir, "rules": rules,
                                      "state_dir": os.path.join(target_dir, "state"),
                                      "cache_dir": os.path.join(target_dir, "cache")}})
    ctx = build_context(settings)
    if ctx.script_error:
        print(f"warning: {ctx.script_error}", file=out)
    print(f"Delivering the sample messages through {rules}", file=out)
    print(f"into the Maildir {maildir}\n", file=out)
    results = []
    for name, sender, rcpt in _read_envelopes(os.path.join(ex, "envelopes.txt")):
        with open(os.path.join(ex, "messages", name), "rb") as f:
            raw = f.read()
        msg = Message(raw, sender=sender, recipients=[rcpt], origin=f"demo:{name}")
        outcome = engine.process(msg, ctx)
        where = [r.mailbox or r.target for r in outcome.receipts]
        flags = sorted({f for a in outcome.actions for f in getattr(a, "flags", [])})
        flag_text = f"  flags {' '.join(flags)}" if flags else ""
        print(f"  {name:22} -> {', '.join(where) or outcome.status}{flag_text}", file=out)
        results.append((name, outcome.status, where))
    print(f"\nLook at the result: ls -R {maildir}", file=out)
    return results


def main(args) -> int:
    import tempfile

    target = args.dir or tempfile.mkdtemp(prefix="fetchdeliver-demo-")
    os.makedirs(target, exist_ok=True)
    results = run_demo(target)
    return 0 if all(status == "delivered" for _, status, _ in results) else 75
