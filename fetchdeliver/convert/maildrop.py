"""maildrop's mailfilter language -> Sieve.

Translated: `if (...)` / `else` / `elsif` with `!`, `&&`, `||` and parentheses;
patterns `/re/:hbD` (header lines are `Name: value`, so a header pattern must start
with `^Name:`; the body is matched line by line), `$VAR =~ /re/`; `to` and `cc`
(folders, `|program`, `!address`), `exit`, `include`, `exception { }`, `xfilter`,
`log`/`logfile` (dropped), variables with `$MATCH`/`$MATCH1`..`$MATCH9`.
Not translated (a warning naming file:line, a comment in the output): `foreach`,
weighted scoring, backticks, numeric expressions, patterns Sieve cannot say.
"""

from __future__ import annotations

from typing import Callable

import posixpath
import re

from fetchdeliver.convert import checked
from fetchdeliver.convert.procmail_regex import Untranslatable, sieve_list, sieve_str
from fetchdeliver.errors import FetchdeliverError

CASEMAP = ' :comparator "i;ascii-casemap"'
OCTET = ' :comparator "i;octet"'
IGNORED = {"LOGFILE", "VERBOSE", "SHELL", "PATH", "SENDMAIL", "MAILDIRQUOTA", "UMASK", "LOCKEXT",
           "LOCKSLEEP", "LOCKTIMEOUT", "LOCKREFRESH", "MAILFILTER", "MAILDROP_OLD_REGEXP", "EXITCODE"}
SHELL_METAS = set("&|<>~;?*[`$")


class ParseError(FetchdeliverError):
    """Not mailfilter syntax; the message names file:line."""


class Problem:
    def __init__(self, file: str, line: int, text: str) -> None:
        self.file, self.line, self.text = file, line, text

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.text}"


# -- lexing ---------------------------------------------------------------------------

class Lexer:
    def __init__(self, text: str, file: str) -> None:
        self.s, self.file, self.i = text, file, 0

    def line(self) -> int:
        return self.s.count("\n", 0, self.i) + 1

    def err(self, what: str) -> ParseError:
        return ParseError(f"{self.file}:{self.line()}: {what}")

    def skip(self, newlines: bool = True) -> None:
        s = self.s
        while self.i < len(s):
            c = s[self.i]
            if c == "#":
                while self.i < len(s) and s[self.i] != "\n":
                    self.i += 1
            elif c == "\\" and s.startswith("\\\n", self.i):
                self.i += 2
            elif c in " \t\r;" or (newlines and c == "\n"):
                self.i += 1
            else:
                return

    def peek(self, newlines: bool = True) -> str:
        self.skip(newlines)
        return self.s[self.i:self.i + 1]

    def word(self) -> str:
        self.skip()
        m = re.compile(r"[A-Za-z_][A-Za-z0-9_]*").match(self.s, self.i)
        if not m:
            raise self.err(f"expected a statement, found {self.s[self.i:self.i + 20]!r}")
        self.i = m.end()
        return m.group(0)

    def expect(self, c: str) -> None:
        if self.peek() != c:
            raise self.err(f"expected {c!r}, found {self.s[self.i:self.i + 20]!r}")
        self.i += 1

    def string(self) -> tuple[str, str]:
        """("dq"|"sq"|"bq"|"bare", text) of the next word or quoted string."""
        self.skip(newlines=False)
        c = self.s[self.i:self.i + 1]
        if c in ("\"", "'", "`"):
            j = self.i + 1
            out = []
            while j < len(self.s) and self.s[j] != c:
                if self.s[j] == "\\" and c == "\"" and j + 1 < len(self.s):
                    out.append(self.s[j:j + 2])
                    j += 2
                    continue
                out.append(self.s[j])
                j += 1
            if j >= len(self.s):
                raise self.err(f"unterminated {c}")
            self.i = j + 1
            return {"\"": "dq", "'": "sq", "`": "bq"}[c], "".join(out)
        m = re.compile(r"[^\s;{}()#]+").match(self.s, self.i)
        if not m:
            raise self.err("expected a value")
        self.i = m.end()
        return "bare", m.group(0)

    def pattern(self) -> tuple[str, str]:
        """/re/:flags -> (re, flags)."""
        self.skip()
        if self.s[self.i:self.i + 1] != "/":
            raise self.err("expected /pattern/")
        j = self.i + 1
        in_class = False
        while j < len(self.s) and self.s[j] != "\n":
            c = self.s[j]
            if c == "\\":
                j += 2
                continue
            if c == "[":
                in_class = True
            elif c == "]":
                in_class = False
            elif c == "/" and not in_class:
                break
            j += 1
        else:
            raise self.err("unterminated /pattern/")
        rx = self.s[self.i + 1:j]
        self.i = j + 1
        flags = ""
        m = re.compile(r":([A-Za-z]*)(,[-0-9.]+(,[-0-9.]+)?)?").match(self.s, self.i)
        if m:
            flags = m.group(1) + ("w" if m.group(2) else "")
            self.i = m.end()
        return rx, flags


# -- syntax tree: tuples --------------------------------------------------------------
# ("set", line, name, kind, text) ("to"|"cc", line, kind, text) ("exit", line) ("xfilter", line, kind, text)
# ("log", line) ("include", line, kind, text) ("exception", line, block) ("if", line, cond, then, else|None)
# ("foreach", line, raw) ; cond: ("pat", rx, flags) ("var", name, rx, flags) ("not", c) ("and", a, b)
# ("or", a, b)

def parse(text: str, file: str) -> list:
    lx = Lexer(text, file)

    def block() -> list:
        lx.expect("{")
        out = []
        while lx.peek() != "}":
            if not lx.peek():
                raise lx.err("a { block is not closed")
            out.append(statement())
        lx.i += 1
        return out

    def body() -> list:
        return block() if lx.peek() == "{" else [statement()]

    def cond():
        a = conj()
        while lx.peek() == "|" and lx.s.startswith("||", lx.i):
            lx.i += 2
            a = ("or", a, conj())
        return a

    def conj():
        a = unary()
        while lx.peek() == "&" and lx.s.startswith("&&", lx.i):
            lx.i += 2
            a = ("and", a, unary())
        return a

    def unary():
        c = lx.peek()
        if c == "!":
            lx.i += 1
            return ("not", unary())
        if c == "(":
            lx.i += 1
            a = cond()
            lx.expect(")")
            return a
        if c == "/":
            rx, flags = lx.pattern()
            return ("pat", rx, flags)
        if c == "$":
            m = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?\s*=~\s*").match(lx.s, lx.i)
            if m:
                lx.i = m.end()
                rx, flags = lx.pattern()
                return ("var", m.group(1), rx, flags)
        start = lx.i
        depth = 0
        while lx.i < len(lx.s) and lx.s[lx.i] != "\n":
            ch = lx.s[lx.i]
            if ch == "(":
                depth += 1
            elif ch == ")":
                if depth == 0:
                    break
                depth -= 1
            elif depth == 0 and lx.s.startswith(("&&", "||"), lx.i):
                break
            lx.i += 1
        return ("expr", lx.s[start:lx.i].strip())

    def statement():
        lx.skip()
        line = lx.line()
        if lx.peek() == "{":
            return ("exception", line, block())
        w = lx.word()
        if lx.peek(newlines=False) == "=" and not lx.s.startswith("=~", lx.i):
            lx.i += 1
            lx.skip(newlines=False)
            if lx.s[lx.i:lx.i + 1] in ("\n", ""):
                return ("set", line, w, "sq", "")
            kind, val = lx.string()
            return ("set", line, w, kind, val)
        if w == "if":
            lx.expect("(")
            c = cond()
            lx.expect(")")
            then = body()
            other = None
            save = lx.i
            nxt = lx.peek()
            if nxt == "e":
                m = re.compile(r"(else|elsif)\b").match(lx.s, lx.i)
                if m and m.group(1) == "else":
                    lx.i = m.end()
                    other = body()
                elif m:  # `elsif` is `else { if ... }`; further elsif/else hang off the inner if
                    lx.i = m.end()
                    lx.expect("(")
                    c2 = cond()
                    lx.expect(")")
                    inner_then = body()
                    other = [elsif_tail(line, c2, inner_then)]
                else:
                    lx.i = save
            return ("if", line, c, then, other)
        if w in ("to", "cc", "xfilter", "include", "log", "logfile", "echo"):
            kind, val = lx.string()
            if w in ("log", "logfile", "echo"):
                return ("log", line)
            return (w, line, kind, val)
        if w == "exit":
            return ("exit", line)
        if w == "exception":
            return ("exception", line, block())
        if w == "foreach":
            start = lx.i
            while lx.i < len(lx.s) and lx.s[lx.i] != "\n":
                lx.i += 1
            raw = lx.s[start:lx.i].strip()
            body()
            return ("foreach", line, raw)
        raise lx.err(f"unknown statement {w!r}")

    def elsif_tail(line, c, then):
        nxt = lx.peek()
        other = None
        if nxt == "e":
            m = re.compile(r"(else|elsif)\b").match(lx.s, lx.i)
            if m and m.group(1) == "else":
                lx.i = m.end()
                other = body()
            elif m:
                lx.i = m.end()
                lx.expect("(")
                c2 = cond()
                lx.expect(")")
                t2 = body()
                other = [elsif_tail(line, c2, t2)]
        return ("if", line, c, then, other)

    out = []
    while lx.peek():
        out.append(statement())
    return out


# -- conversion -----------------------------------------------------------------------

def _pcre(rx: str, mode: str) -> str:
    """A maildrop (PCRE) pattern -> the Sieve :regex text. mode "value" or "text" (line by line)."""
    return _pcre_groups(rx, mode)[0]


LF, CR, TAB = "${hex:0A}", "${hex:0D}", "${hex:09}"  # encoded-character: POSIX has no \\n
# PCRE escapes -> POSIX text (outside a class, inside one). \\w \\W \\s \\S \\b \\B stay: RE2 and
# glibc read them; \\d is a plain "d" to glibc, so it is spelled out.
_ESCAPES = {"d": ("[0-9]", "0-9"), "D": ("[^0-9]", None), "t": (TAB, TAB), "n": (LF, LF), "r": (CR, CR)}


def _pcre_groups(rx: str, mode: str) -> tuple[str, list[int]]:
    """The pattern and, for each of its capture groups, the group number it has in the output
    (the line anchors of a body pattern and `(?:` add groups of their own)."""
    if re.search(r"\(\?[=!<]", rx):
        raise Untranslatable("lookaround in a pattern (not in POSIX/RE2 regular expressions)")
    if re.search(r"\(\?(?!:)", rx):
        raise Untranslatable("inline options in a pattern (not in POSIX/RE2 regular expressions)")
    if re.search(r"\\[1-9]", rx):
        raise Untranslatable("a back-reference in a pattern (not in POSIX/RE2 regular expressions)")
    if re.search(r"(?<!\\)[*+?}]\?|(?<!\\)[*+?}]\+", rx.replace("\\\\", "")):
        raise Untranslatable("a lazy or possessive quantifier (PCRE only; POSIX matches leftmost-longest)")
    out = []
    i = 0
    in_class = False
    added = 0
    groups: list[int] = []
    while i < len(rx):
        c = rx[i]
        if c == "(" and not in_class:
            if rx.startswith("(?:", i):
                added += 1  # a plain group in POSIX
                out.append("(")
                i += 3
                continue
            groups.append(len(groups) + added + 1)
        if c == "\\" and i + 1 < len(rx):
            d = rx[i + 1]
            if d in _ESCAPES:
                text = _ESCAPES[d][1 if in_class else 0]
                if text is None:
                    raise Untranslatable(f"\\{d} inside [ ] (not in POSIX regular expressions)")
                out.append(text)
            elif d == "s" and mode == "text":
                out.append(" " + TAB if in_class else "[ " + TAB + "]")
            else:
                out.append(c + d)
            i += 2
            continue
        if in_class:
            if c == "]" and not (out and out[-1] in ("[", "[^")):
                in_class = False
            out.append(c)
        elif c == "[":
            in_class = True
            if rx.startswith("[^", i):
                out.append("[^" + (LF if mode == "text" else ""))
                i += 2
                continue
            out.append(c)
        elif c == "." and mode == "text":
            out.append("[^" + LF + "]")
        elif c == "^" and mode == "text":
            out.append("(^|" + LF + ")")
            added += 1
        elif c == "$" and mode == "text":
            out.append("(" + CR + "?" + LF + "|$)")
            added += 1
        else:
            out.append(c)
        i += 1
    return "".join(out), groups


_HEADER = re.compile(r"^\^([A-Za-z0-9][A-Za-z0-9_-]*):(\\s\*|\\s\+| \*| \+| )?")


class Converter:
    def __init__(self, file: str, env: dict[str, str], read_file) -> None:
        self.file = file
        self.static: dict[str, str] = dict(env)
        self.dynamic: set[str] = set()
        # True after a pattern searched in the body matched: Sieve's body test sets no match variables
        # (RFC 5173), so a later $MATCH cannot be said.
        self.match_from_body = False
        self.requires: set[str] = set()
        self.problems: list[Problem] = []
        self.lines: list[str] = []
        self.spans: list = []
        self.programs: dict[str, str] = {}
        self.read_file = read_file
        self.depth = 0
        self.notes: list[str] = []

    def emit(self, indent: int, text: str) -> None:
        self.lines.append("    " * indent + text)

    def warn(self, line: int, text: str, indent: int) -> None:
        self.problems.append(Problem(self.file, line, text))
        self.emit(indent, f"# UNTRANSLATED ({self.file}:{line}): {text}")

    # -- values
    def expand(self, kind: str, text: str) -> str:
        """A maildrop string -> Sieve string content (${NAME} for run-time values)."""
        if kind == "bq":
            raise Untranslatable("a value from a `command`")
        if kind == "sq":
            return text.replace("${", "$ {")
        out = []
        i = 0
        while i < len(text):
            c = text[i]
            if c == "\\" and i + 1 < len(text):
                out.append(text[i + 1])
                i += 2
                continue
            if c == "$":
                m = re.compile(r"\$(\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))").match(text, i)
                if m:
                    name = m.group(2) or m.group(3)
                    i = m.end()
                    if re.match(r"^MATCH\d?$", name) and self.match_from_body:
                        raise Untranslatable(f"${name} of a pattern searched in the body: Sieve's body "
                                             "test sets no match variables (RFC 5173)")
                    if name in self.dynamic or re.match(r"^MATCH\d?$", name):
                        self.requires.add("variables")
                        out.append("${" + ("pm_" + name if name.startswith("MATCH") else name) + "}")
                    else:
                        out.append(self.static.get(name, ""))
                    continue
            out.append(c)
            i += 1
        return "".join(out)

    def mailbox(self, path: str) -> str:
        root = (self.static.get("DEFAULT") or "").rstrip("/")
        if not path.startswith("/") and not path.startswith("$"):
            path = posixpath.join(self.static.get("HOME", "/"), path)
        full = posixpath.normpath(path)
        if full == root:
            return "INBOX"
        if root and full.startswith(root + "/"):
            rel = full[len(root) + 1:]
            parts = rel.split("/")
            if len(parts) == 1 and parts[0].startswith(".") and len(parts[0]) > 1:
                parts = parts[0][1:].split(".")
            return "/".join(parts)
        raise Untranslatable(f"{path} is outside DEFAULT ({root}); give it a mailbox name by hand")

    # -- conditions
    def cond(self, c) -> str:
        kind = c[0]
        if kind == "not":
            return "not " + self.cond(c[1])
        if kind in ("and", "or"):
            return ("allof(" if kind == "and" else "anyof(") + self.cond(c[1]) + ", " + self.cond(c[2]) + ")"
        if kind == "expr":
            raise Untranslatable(f"the expression {c[1]!r} (only patterns and $VAR =~ /re/ are translated)")
        if kind == "var":
            _, name, rx, flags = c
            cmp = OCTET if "D" in flags else CASEMAP
            subject = "${" + name + "}" if name in self.dynamic else self.static.get(name, "")
            self.requires.update(("regex", "variables"))
            return f"string :regex{cmp} {sieve_str(subject)} {sieve_str(_pcre(rx, 'text'))}"
        _, rx, flags = c
        if "w" in flags:
            raise Untranslatable("weighted scoring has no Sieve equivalent")
        if "$" in rx.replace("\\$", "") and re.search(r"\$[A-Za-z{]", rx):
            raise Untranslatable("a variable inside a pattern")
        cmp = OCTET if "D" in flags else CASEMAP
        head = "h" in flags or "b" not in flags
        body = "b" in flags
        tests = []
        self.requires.add("regex")
        if head:
            m = _HEADER.match(rx)
            if not m:
                raise Untranslatable("a header pattern must start with ^Name: (Sieve tests one header at a time)")
            rest = rx[m.end():]
            name, value = sieve_list([m.group(1)]), sieve_str("^" + _pcre(rest, "value"))
            # maildrop also searches the headers of every MIME part of a message with a
            # MIME-Version header (RFC 5703 :anychild includes the top level).
            self.requires.add("mime")
            tests.append(f"anyof(header :regex{cmp} {name} {value}, allof(exists \"MIME-Version\", "
                         f"header :mime :anychild :regex{cmp} {name} {value}))")
        if body:
            self.requires.add("body")
            tests.append(f"body :raw :regex{cmp} {sieve_str(_pcre(rx, 'text'))}")
        return tests[0] if len(tests) == 1 else "anyof(" + ", ".join(tests) + ")"

    # -- statements
    def block(self, items: list, indent: int, conditional: bool) -> None:
        for it in items:
            mark = len(self.spans)
            self.spans.append(it)
            self.emit(indent, checked.open_marker(mark))
            if it[0] in ("to", "cc", "exit", "xfilter"):
                self.emit(indent, f"# {self.file}:{it[1]}: {it[0]}")
            try:
                self.statement(it, indent, conditional)
            except Untranslatable as e:
                self.warn(it[1], str(e), indent)
            self.emit(indent, checked.close_marker(mark))

    def statement(self, it, indent: int, conditional: bool) -> None:
        kind = it[0]
        if kind == "set":
            _, _, name, vkind, val = it
            if name in IGNORED:
                self.emit(indent, f"# {name}=...  -- ignored")
                return
            value = self.expand(vkind, val)
            if name == "DEFAULT":
                if "${" in value or conditional:
                    raise Untranslatable("DEFAULT set at run time")
                self.static[name] = value
                self.emit(indent, f"# DEFAULT={value}  -- folders are mapped relative to it")
                return
            if conditional or "${" in value:
                self.dynamic.add(name)
                self.static.pop(name, None)
            else:
                self.static[name] = value
            self.requires.add("variables")
            self.emit(indent, f"set {sieve_str(name)} {sieve_str(value)};")
        elif kind == "if":
            _, _, c, then, other = it
            test = self.cond(c)
            groups = self.match_sets(c)
            self.emit(indent, f"if {test} {{")
            for g in groups:
                self.emit(indent + 1, g)
            self.block(then, indent + 1, True)
            if other is not None:
                self.emit(indent, "} else {")
                self.block(other, indent + 1, True)
            self.emit(indent, "}")
        elif kind in ("to", "cc"):
            self.deliver(kind, it[2], it[3], indent)
        elif kind == "exit":
            self.emit(indent, "discard;")
            self.emit(indent, "stop;")
        elif kind == "log":
            self.emit(indent, "# log  -- dropped: fetchdeliver logs each delivery itself")
        elif kind == "exception":
            self.emit(indent, "# exception { }: Sieve never fails half-way; the block runs as it is")
            self.block(it[2], indent, conditional)
        elif kind == "include":
            path = self.expand(it[2], it[3])
            if "${" in path:
                raise Untranslatable("include with a run-time file name")
            if self.depth > 8:
                raise Untranslatable("include nested too deeply")
            try:
                sub = parse(self.read_file(path), path)
            except OSError as e:
                raise Untranslatable(f"include: cannot read {path}: {e.strerror}") from None
            except ParseError as e:
                raise Untranslatable(f"include: {e}") from None
            self.depth += 1
            saved, self.file = self.file, path
            self.block(sub, indent, conditional)
            self.file = saved
            self.depth -= 1
        elif kind == "xfilter":
            words = self.program_words(it[2], it[3])
            self.requires.add("vnd.dovecot.filter")
            args = (" [" + ", ".join(sieve_str(a) for a in words[1:]) + "]") if len(words) > 1 else ""
            self.emit(indent, f"if not filter {sieve_str(posixpath.basename(words[0]))}{args} {{ }}")
        elif kind == "foreach":
            raise Untranslatable(f"foreach {it[2]} (a loop over matches) has no Sieve equivalent")

    def match_sets(self, c) -> list[str]:
        """After a true pattern test, maildrop's MATCH, MATCH1.. hold what it matched."""
        while c[0] == "and":  # the last pattern of an && chain matched last
            c = c[2] if c[2][0] in ("pat", "var", "and") else c[1]
        if c[0] in ("pat", "var"):
            rx, flags = (c[1], c[2]) if c[0] == "pat" else (c[2], c[3])
            head = c[0] == "pat" and ("h" in flags or "b" not in flags)
            body = c[0] == "var" or "b" in flags
            self.match_from_body = c[0] == "pat" and "b" in flags
            if self.match_from_body:
                return []
            maps = []
            if head:
                maps.append(_pcre_groups(rx, "value")[1])
            if body:
                maps.append(_pcre_groups(rx, "text")[1])
            if maps[0]:
                if len(maps) > 1 and maps[0] != maps[1]:
                    raise Untranslatable("MATCH1.. of a pattern searched in the header and the body")
                if max(maps[0][:9]) > 9:
                    raise Untranslatable("a capture group beyond ${9}")
                self.requires.add("variables")
                self.dynamic.update(f"MATCH{k}" for k in range(1, min(9, len(maps[0])) + 1))
                return [self.whole_match(c, head, body)] + \
                    [f'set "pm_MATCH{k}" "${{{g}}}";' for k, g in enumerate(maps[0][:9], 1)]
            return [self.whole_match(c, head, body)]
        return []

    def whole_match(self, c, head: bool, body: bool) -> str:
        """MATCH: the text the whole pattern matched; for a header pattern that is the line
        `Name: value` (Sieve matched the value: the name comes from the pattern)."""
        self.requires.add("variables")
        self.dynamic.add("MATCH")
        m = _HEADER.match(c[1]) if c[0] == "pat" and head and not body else None
        return f'set "pm_MATCH" "{m.group(1) + ": " if m else ""}${{0}}";'


    def program_words(self, kind: str, text: str) -> list[str]:
        import shlex

        value = self.expand(kind, text)
        if any(ch in SHELL_METAS for ch in value) or "${" in value:
            raise Untranslatable("the command needs a shell or a run-time value: put it in a script in pipe_bin_dir")
        words = shlex.split(value)
        if not words:
            raise Untranslatable("an empty command")
        self.programs[posixpath.basename(words[0])] = words[0]
        return words

    def deliver(self, kind: str, vkind: str, text: str, indent: int) -> None:
        copy = kind == "cc"
        value = self.expand(vkind, text).strip()
        if value.startswith("|"):
            words = self.program_words("sq", value[1:])
            self.requires.add("vnd.dovecot.pipe")
            if copy:
                self.requires.add("copy")
            args = (" [" + ", ".join(sieve_str(a) for a in words[1:]) + "]") if len(words) > 1 else ""
            self.emit(indent, f"pipe {':copy ' if copy else ''}{sieve_str(posixpath.basename(words[0]))}{args};")
        elif value.startswith("!"):
            note = ("a forward (redirect) is queued durably in the outbound queue (by `deliver` too) and sent "
                    "by `fetchdeliver daemon`, `fetchdeliver lmtp` or `fetchdeliver queue flush`")
            if note not in self.notes:
                self.notes.append(note)
            for addr in value[1:].split():
                if copy:
                    self.requires.add("copy")
                self.emit(indent, f"redirect {':copy ' if copy else ''}{sieve_str(addr)};")
        else:
            if "${" in value:
                root = (self.static.get("DEFAULT") or "").rstrip("/")
                if not value.startswith(root + "/"):
                    raise Untranslatable("a folder from a run-time value outside DEFAULT")
                rel = value[len(root) + 1:].rstrip("/")
                box = "/".join(rel[1:].split(".")) if rel.startswith(".") else rel
            else:
                box = self.mailbox(value.rstrip("/"))
            if box == "INBOX":
                self.emit(indent, "keep;")
            else:
                self.requires.add("fileinto")
                if copy:
                    self.requires.add("copy")
                self.emit(indent, f"fileinto {':copy ' if copy else ''}{sieve_str(box)};")
        if not copy:
            self.emit(indent, "stop;")


class Result:
    def __init__(self, script: str, problems: list[Problem], config: str) -> None:
        self.script, self.problems, self.config = script, problems, config
        self.mailbox: Callable[[str], str] = str  # folder path -> mailbox name, for `convert --check`
        self.static: dict[str, str] = {}     # MAILDIR, DEFAULT, ... as the conversion ended
        self.programs: dict[str, str] = {}

    @property
    def complete(self) -> bool:
        return not self.problems


def _read(path: str) -> str:
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        return f.read()


def convert(text: str, file: str = "<stdin>", *, env: dict[str, str] | None = None, read_file=None,
            pipe_bin_dir: str | None = None) -> Result:
    """Convert a mailfilter; raises ParseError when it is not mailfilter syntax."""
    from fetchdeliver.convert.procmailrc import default_env

    items = parse(text, file)
    c = Converter(file, env if env is not None else default_env(), read_file or _read)
    c.static.setdefault("DEFAULT", posixpath.join(c.static.get("HOME", "/"), "Maildir"))
    c.block(items, 0, False)

    def on_fail(n, message, indent):
        line = c.spans[n][1] if n is not None else 0
        c.problems.append(Problem(file, line, f"the translation does not compile: {message}"))
        return [f"# UNTRANSLATED ({file}:{line}): the translation does not compile: {message}"]

    if any("${hex:" in ln for ln in c.lines):
        c.requires.add("encoded-character")  # newlines and tabs in the patterns
    body = checked.make_compile(c.lines, c.requires, on_fail)
    root = (c.static.get("DEFAULT") or "").rstrip("/")
    cfg = ["[delivery]", f'maildir = "{root}"']
    ext = [f"+{e}" for e in sorted(c.requires) if e.startswith("vnd.dovecot.")]
    if ext:
        cfg += ["", "[sieve]", "extensions = [" + ", ".join(f'"{e}"' for e in ext) + "]",
                f'pipe_bin_dir = "{pipe_bin_dir or "~/.local/lib/fetchdeliver/bin"}"']
    head = [f"# Converted from {file} by `fetchdeliver convert maildrop`.",
            "# Folders are mailboxes under the delivery root (maildrop's DEFAULT), which is INBOX.",
            "# The settings this script expects:"] + ["#   " + x if x else "#" for x in cfg]
    if c.programs:
        head.append("# Programs it runs (link or copy them into pipe_bin_dir):")
        head += [f"#   {n} -> {p}" for n, p in sorted(c.programs.items())]
    head += [f"# Note: {n}" for n in c.notes]
    if c.problems:
        head.append(f"# {len(c.problems)} part(s) not translated exactly: see the UNTRANSLATED comments.")
    out = head + [""] + checked.require_lines(c.requires) + body
    result = Result("\n".join(out) + "\n", c.problems, "\n".join(cfg) + "\n")
    result.mailbox = c.mailbox        # folder path -> mailbox name, for `convert --check`
    result.static = dict(c.static)   # MAILDIR, DEFAULT, ... as the conversion ended
    result.programs = dict(c.programs)
    return result
