"""Every converted Sieve script is compiled with fetchdeliver's own compiler before it is printed.

A converter wraps the output of each rule (recipe, assignment) between two marker
comments. When the compiler refuses the script, the innermost rule around the first
error is replaced by a comment naming its file:line and the compiler's message, and
the script is compiled again, until it compiles. The markers are then removed.
"""

from __future__ import annotations

MARK = "#@@fd-span"
# The extensions a converted script may use (the [sieve] extensions it asks for).
OPTIONS = {"extensions": ["+vnd.dovecot.pipe", "+vnd.dovecot.filter", "+vnd.dovecot.execute",
                          "+editheader"]}


def open_marker(n: int) -> str:
    return f"{MARK}<{n}"


def close_marker(n: int) -> str:
    return f"{MARK}>{n}"


def _spans(lines: list[str]) -> list[tuple[int, int, int]]:
    """(span number, first line index, last line index) for every marked span."""
    opened: dict[int, int] = {}
    out = []
    for k, line in enumerate(lines):
        s = line.strip()
        if s.startswith(MARK + "<"):
            opened[int(s[len(MARK) + 1:])] = k
        elif s.startswith(MARK + ">"):
            n = int(s[len(MARK) + 1:])
            out.append((n, opened.pop(n), k))
    return out


def require_lines(requires) -> list[str]:
    from fetchdeliver.convert.procmail_regex import sieve_str

    reqs = sorted(requires)
    return ["require [" + ", ".join(sieve_str(r) for r in reqs) + "];", ""] if reqs else []


def make_compile(lines: list[str], requires, on_fail) -> list[str]:
    """Compile require + lines; replace failing spans via on_fail(span, message, indent) -> comment lines.

    Returns the lines without markers. on_fail(None, ...) is called (and the whole
    body replaced) if an error falls outside every span: a converter bug, never a
    script that does not compile.
    """
    from fetchdeliver.sieve import compile_text
    from fetchdeliver.sieve.errors import SieveCompileError

    lines = list(lines)
    pre = require_lines(requires)
    for _ in range(len(lines) + 2):
        try:
            compile_text("\n".join(pre + lines) + "\n", "converted.sieve", options=OPTIONS)
            break
        except SieveCompileError as e:
            err = e.errors[0]
            # the message quotes the pattern, whose newlines must not break the comment line
            message = "".join(c if c.isprintable() else repr(c)[1:-1] for c in err.message)
            idx = err.line - 1 - len(pre)
            inside = [sp for sp in _spans(lines) if sp[1] <= idx <= sp[2]]
            if not inside:
                lines = on_fail(None, message, 0) + ["# " + ln for ln in lines if not ln.strip().startswith(MARK)]
                continue
            n, a, b = max(inside, key=lambda sp: sp[1])
            indent = len(lines[a]) - len(lines[a].lstrip())
            lines[a:b + 1] = [" " * indent + c for c in on_fail(n, message, indent)]
    else:  # pragma: no cover - each round removes a span
        raise RuntimeError("converted script does not compile")
    return [ln for ln in lines if not ln.strip().startswith(MARK)]
