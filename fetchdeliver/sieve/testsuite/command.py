"""`fetchdeliver sieve testsuite FILE...`: one line per file, then the totals."""

from __future__ import annotations

import sys

from fetchdeliver.sieve.testsuite import display_name, makefile_cases, run_file


def main(files: list[str], *, expect_failure: bool = False, makefile: str | None = None,
         plugins: bool = False, verbose: bool = False, out=None) -> int:
    """Print `PASS name` / `FAIL name: first failing test` per file and
    `N/M files passed, K/L tests passed` last; exit 0 when every file passed."""
    out = out or sys.stdout
    cases = [(f, expect_failure, plugins) for f in files]
    if makefile:
        try:
            cases += makefile_cases(makefile, plugins)
        except OSError as e:
            sys.stderr.write(f"fetchdeliver sieve testsuite: cannot read {makefile}: {e.strerror}\n")
            return 66
    if not cases:
        sys.stderr.write("fetchdeliver sieve testsuite: no files given (FILE... or --makefile)\n")
        return 64
    files_ok = tests_ok = tests_total = 0
    for path, fail, plug in cases:
        res = run_file(path, fail, plug)
        name = display_name(path)
        files_ok += res.ok
        tests_ok += res.passed
        tests_total += res.total
        if res.ok:
            out.write(f"PASS {name}\n")
        else:
            out.write(f"FAIL {name}: {res.first_failure}\n")
        if verbose:
            for line in res.lines:
                out.write(f"    {line}\n")
    out.write(f"{files_ok}/{len(cases)} files passed, {tests_ok}/{tests_total} tests passed\n")
    return 0 if files_ok == len(cases) else 1
