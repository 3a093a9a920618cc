"""Pigeonhole's Sieve testsuite (`.svtest` files, the `vnd.dovecot.testsuite` language) run
with fetchdeliver's interpreter: `fetchdeliver sieve testsuite FILE...`.

    from fetchdeliver.sieve.testsuite import run_file
    result = run_file("tests/match-types/is.svtest")   # a FileResult: ok, total, passed, failures

The extension (extension.py) is enabled only here (registry.HARNESS_ONLY); the
harness (harness.py) holds the message, the result, the mail store and the
captured outgoing mail of one file's run.
"""

from __future__ import annotations

import os
import re

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fetchdeliver.sieve.testsuite.harness import FileResult


def run_file(path: str, expect_failure: bool = False, plugins: bool = False) -> "FileResult":
    """Run one .svtest file; expect_failure is Pigeonhole's `testsuite -F` (every test must fail),
    plugins its `-P sieve_extprograms` (the vnd.dovecot.pipe/filter/execute extensions)."""
    from fetchdeliver.sieve.testsuite.harness import Harness

    return Harness(path, expect_failure, plugins).run()


def makefile_cases(makefile: str, plugins: bool = False) -> list[tuple[str, bool, bool]]:
    """(path, expect_failure, plugins) for every file Pigeonhole's `make test` runs, read from its Makefile.am
    (test_cases, failure_test_cases; extprograms_test_cases too with plugins=True)."""
    with open(makefile, encoding="utf-8") as f:
        text = f.read().replace("\\\n", " ")
    base = os.path.dirname(os.path.abspath(makefile))
    out: list[tuple[str, bool, bool]] = []
    lists = [("test_cases", False, False), ("failure_test_cases", True, False)]
    if plugins:
        lists.append(("extprograms_test_cases", False, True))
    for var, fail, plug in lists:
        m = re.search(rf"^{var}\s*=(.*)$", text, re.M)
        if m is None:
            continue
        for word in m.group(1).split():
            if word.endswith(".svtest"):
                out.append((os.path.join(base, word), fail, plug))
    return out


def display_name(path: str) -> str:
    """The file's name as printed: the part after the last "tests/" directory."""
    p = os.path.abspath(path)
    i = p.rfind(os.sep + "tests" + os.sep)
    return p[i + 7:] if i >= 0 else path
