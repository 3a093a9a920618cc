"""Pigeonhole 0.5.19's own Sieve testsuite, run with fetchdeliver's interpreter.

The .svtest files are read from ../shared/conformance/pigeonhole-0.5.19/ next to
the repository root (or $FETCHDELIVER_CONFORMANCE), never copied here. Every file
Pigeonhole's `make test` / `make test-plugins` runs (its Makefile.am) is run; the
files in tests/sieve_testsuite/passing.txt must all pass: the set of passing files
may grow (add the newly passing names) but never shrink. The counts are printed for CI.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PASSING = ROOT / "tests" / "sieve_testsuite" / "passing.txt"


def conformance_dir() -> Path | None:
    candidates = [os.environ.get("FETCHDELIVER_CONFORMANCE"), ROOT.parent / "shared" / "conformance"]
    for c in candidates:
        if c and (Path(c) / "pigeonhole-0.5.19" / "Makefile.am").is_file():
            return Path(c) / "pigeonhole-0.5.19"
    return None


PIGEONHOLE = conformance_dir()
needs_suite = pytest.mark.skipif(PIGEONHOLE is None,
                                 reason="Pigeonhole's testsuite not found in ../shared/conformance "
                                        "(or $FETCHDELIVER_CONFORMANCE)")


def recorded() -> list[str]:
    lines = PASSING.read_text(encoding="utf-8").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


@needs_suite
@pytest.mark.timeout(600)
def test_passing_files_do_not_shrink(capsys):
    from fetchdeliver.sieve.testsuite import display_name, makefile_cases, run_file

    cases = makefile_cases(str(PIGEONHOLE / "Makefile.am"), plugins=True)
    assert len(cases) == 146  # 132 test_cases, 4 failure_test_cases, 10 extprograms_test_cases
    results = {}
    tests_ok = tests_total = 0
    for path, fail, plugins in cases:
        res = run_file(path, fail, plugins)
        results[display_name(path)] = res
        tests_ok += res.passed
        tests_total += res.total
    passing = sorted(n for n, r in results.items() if r.ok)
    files_line = (f"Pigeonhole 0.5.19 testsuite: {len(passing)}/{len(cases)} files passed, "
                  f"{tests_ok}/{tests_total} tests passed")
    with capsys.disabled():
        print("\n" + files_line)
    expected = recorded()
    regressed = [f"{n}: {results[n].first_failure}" for n in expected if n in results and not results[n].ok]
    unknown = [n for n in expected if n not in results]
    assert not unknown, f"names in {PASSING.name} that Makefile.am does not list: {unknown}"
    assert not regressed, "files that passed before fail now:\n" + "\n".join(regressed)
    newly = sorted(set(passing) - set(expected))
    if newly:
        with capsys.disabled():
            print(f"newly passing (add them to {PASSING.relative_to(ROOT)}): " + " ".join(newly))


@needs_suite
def test_cli_prints_one_line_per_file_and_totals(fetchdeliver_cmd):
    import subprocess

    files = [str(PIGEONHOLE / "tests" / "match-types" / "is.svtest"),
             str(PIGEONHOLE / "tests" / "compile" / "errors.svtest")]
    proc = subprocess.run([*fetchdeliver_cmd, "sieve", "testsuite", *files], capture_output=True,
                          text=True, timeout=120)
    lines = proc.stdout.splitlines()
    assert lines[0] == "PASS match-types/is.svtest"
    assert lines[-1].startswith("1/2 files passed, ") or lines[-1].startswith("2/2 files passed, ")
    assert lines[1].startswith(("PASS compile/errors.svtest", "FAIL compile/errors.svtest: test '"))
    assert proc.returncode == (0 if lines[-1].startswith("2/2") else 1)
