#!/usr/bin/env python3
"""Run every case of cases.toml through the live sieve-test and write expected/*.json.

    python tests/sieve_oracle/record.py            # record everything (rewrites expected/)
    python tests/sieve_oracle/record.py 28-date    # re-record the cases whose id contains "28-date"
    python tests/sieve_oracle/record.py --check    # compare with the recordings, write nothing

One JSON file per script: {"oracle": ..., "script": ..., "cases": {case_id: {...}}}, each case
with the normalized "result", sieve-test's exit code, its error lines (compile/runtime errors,
temp paths removed), the message and envelope, and a fingerprint of its env_options (the test
uses it to spot recordings made with options that cases.toml no longer gives).
Run as root (it switches to `nobody` for sieve-test) or as any normal user.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import oracle  # noqa: E402

_TMP = re.compile(r"/tmp/sieve-oracle-[^/\s']+/")


def _entry(case: oracle.Case, run: oracle.RawRun) -> dict:
    errors = [_TMP.sub("", line) for line in run.stderr.splitlines()
              if "error" in line and "final result" not in line]
    return {
        "result": oracle.result_to_json(run.result),
        "exit": run.returncode,
        "errors": errors,
        "message": case.message,
        "sender": case.sender,
        "recipient": case.recipient,
        "env_sha1": case.env_fingerprint(),
        **({"note": case.note} if case.note else {}),
        **({"compare_ours": False} if not case.compare_ours else {}),
    }


def _dump(data: dict) -> str:
    """Pretty enough to review and diff: one line per case."""
    lines = ["{",
             f' "oracle": {json.dumps(data["oracle"])},',
             f' "script": {json.dumps(data["script"])},',
             ' "cases": {']
    items = list(data["cases"].items())
    for i, (case_id, entry) in enumerate(items):
        comma = "," if i < len(items) - 1 else ""
        lines.append(f"  {json.dumps(case_id)}: {json.dumps(entry, ensure_ascii=False)}{comma}")
    lines += [" }", "}", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("filter", nargs="*", help="only cases whose id contains one of these")
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args(argv)

    reason = oracle.unavailable_reason()
    if reason:
        print(f"record.py: cannot run the oracle: {reason}", file=sys.stderr)
        return 2
    cases = oracle.load_cases()
    if args.filter:
        cases = [c for c in cases if any(f in c.id for f in args.filter)]
    started = time.monotonic()
    runs = oracle.run_cases(cases, workers=args.workers)
    elapsed = time.monotonic() - started

    if args.check:
        expected = oracle.load_expected()
        bad = [c.id for c in cases
               if c.id not in expected or expected[c.id]["result"] != runs[c.id].result]
        for case_id in bad:
            print(f"DIFFERS: {case_id}\n  recorded: {expected.get(case_id, {}).get('result')}\n"
                  f"  live:     {runs[case_id].result}")
        print(f"{len(cases) - len(bad)}/{len(cases)} cases match the recordings ({elapsed:.1f} s)")
        return 1 if bad else 0

    by_script: dict[str, dict] = {}
    for case in cases:
        by_script.setdefault(case.script, {})[case.id] = _entry(case, runs[case.id])
    oracle.EXPECTED_DIR.mkdir(exist_ok=True)
    if not args.filter:
        for old in oracle.EXPECTED_DIR.glob("*.json"):
            old.unlink()
    for script, entries in sorted(by_script.items()):
        path = oracle.EXPECTED_DIR / (Path(script).stem + ".json")
        data = {"oracle": oracle.ORACLE_NAME, "script": script, "cases": {}}
        if path.exists():
            with open(path, encoding="utf-8") as f:
                data["cases"] = json.load(f)["cases"]
        data["cases"].update(entries)
        data["cases"] = dict(sorted(data["cases"].items()))
        with open(path, "w", encoding="utf-8") as f:
            f.write(_dump(data))
    print(f"recorded {len(cases)} cases for {len(by_script)} scripts in {elapsed:.1f} s "
          f"into {oracle.EXPECTED_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
