"""procmailrc -> Sieve: parse the recipes, then emit one Sieve statement per recipe.

Mailbox mapping: a folder relative to MAILDIR becomes a mailbox name for a
Maildir++ (or mbox folder) root: `.lists.debian/` and `lists/debian/` are both
"lists/debian"; DEFAULT (and MAILDIR itself) is INBOX, i.e. Sieve's keep.
Procmail's control flow becomes Sieve's: a delivering recipe ends in `stop`,
`c` uses :copy, and the A/E flags and `c` blocks are tracked in pm_* variables.
"""

from __future__ import annotations

from typing import Callable

import os
import posixpath
import re

from fetchdeliver.convert import checked
from fetchdeliver.convert import procmail_regex as prx
from fetchdeliver.convert.procmail_regex import Untranslatable, sieve_str
from fetchdeliver.errors import FetchdeliverError

# Variables that only steer procmail itself (logging, locking, the shell).
IGNORED_VARS = {
    "LOGFILE": "fetchdeliver logs to stderr or the journal; `fetchdeliver sieve test --trace` explains a decision",
    "LOG": "no log file", "VERBOSE": "no log file", "LOGABSTRACT": "no log file",
    "COMSAT": "no comsat notification", "LOCKFILE": "fetchdeliver locks mailboxes itself",
    "LOCKTIMEOUT": "see [delivery] lock_timeout", "LOCKEXT": "fetchdeliver locks mailboxes itself",
    "LOCKSLEEP": "fetchdeliver locks mailboxes itself", "UMASK": "files are created 0600",
    "SHELL": "programs run without a shell", "SHELLMETAS": "programs run without a shell",
    "SHELLFLAGS": "programs run without a shell", "PATH": "programs come from [sieve] pipe_bin_dir",
    "SENDMAIL": "see the outbound queue for redirect", "SENDMAILFLAGS": "see the outbound queue",
    "LINEBUF": "no line buffer limit", "TIMEOUT": "not used", "NORESRETRY": "not used",
    "SUSPEND": "not used", "MSGPREFIX": "Maildir names are chosen by fetchdeliver",
    "EXITCODE": "fetchdeliver deliver uses sysexits codes",
    "ORGMAIL": "procmail's last resort when DEFAULT fails; fetchdeliver asks the MTA to retry (exit 75) instead",
    "PROCMAIL_VERSION": "not used",
}
SHELL_METAS = set("&|<>~;?*[`")
# Spelled out: procmail's VAR ?? is case-insensitive, and so is Sieve's default comparator.
CASEMAP = ' :comparator "i;ascii-casemap"'
FOLDER_FLAGS = set("HBDAaEehbfcwWir")


class Problem:
    """A warning: something not (or only approximately) translated."""

    def __init__(self, file: str, line: int, text: str) -> None:
        self.file, self.line, self.text = file, line, text

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.text}"


# -- parsing ------------------------------------------------------------------------

class Assign:
    def __init__(self, file: str, line: int, name: str, value: str | None, raw: str) -> None:
        self.file, self.line, self.name, self.value, self.raw = file, line, name, value, raw


class Recipe:
    def __init__(self, file: str, line: int, flags: str, raw: list[str]) -> None:
        self.file, self.line, self.flags, self.raw = file, line, flags, raw
        self.conditions: list[tuple[int, str]] = []
        self.action: str | None = None
        self.action_line = line
        self.block: list | None = None


class ParseError(FetchdeliverError):
    """The rc file is not procmailrc syntax; the message names the line."""


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """(line number, text) with backslash continuations joined."""
    out: list[tuple[int, str]] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        start = i + 1
        cur = lines[i]
        cond = cur.lstrip().startswith("*")
        while cur.endswith("\\") and not cur.endswith("\\\\") and i + 1 < len(lines):
            i += 1
            nxt = lines[i]
            cur = cur[:-1] + (nxt.lstrip() if cond else nxt)
        out.append((start, cur))
        i += 1
    return out


_RECIPE = re.compile(r"^:\s*(\d*)\s*([^:]*?)\s*(?::(.*))?$")
_ASSIGN = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _strip_comment(s: str) -> str:
    """Drop a `#` comment that starts a word (outside quotes)."""
    quote = None
    for k, c in enumerate(s):
        if quote:
            if c == quote:
                quote = None
        elif c in "\"'`":
            quote = c
        elif c == "#" and (k == 0 or s[k - 1].isspace()):
            return s[:k].rstrip()
    return s.rstrip()


def parse(text: str, file: str) -> list:
    """The items (Assign, Recipe) of one rc file, nested blocks included."""
    queue = _logical_lines(text)
    pos = 0

    def next_line():
        nonlocal pos
        while pos < len(queue):
            n, s = queue[pos]
            pos += 1
            st = s.strip()
            if st and not st.startswith("#"):
                return n, st
        return None

    def push_back(n: int, s: str) -> None:
        nonlocal pos
        pos -= 1
        queue[pos] = (n, s)

    def items(depth: int) -> list:
        out: list = []
        while True:
            got = next_line()
            if got is None:
                if depth:
                    raise ParseError(f"{file}: a {{ block is not closed at the end of the file")
                return out
            n, s = got
            if s.startswith("}"):
                if not depth:
                    raise ParseError(f"{file}:{n}: unexpected }}")
                rest = s[1:].strip()
                if rest:
                    push_back(n, rest)
                return out
            if s.startswith(":"):
                out.append(recipe(n, s, depth))
                continue
            s = _strip_comment(s)
            if s.endswith("}") and depth and not s.startswith("{"):
                push_back(n, "}")
                s = s[:-1].rstrip()
            m = _ASSIGN.match(s)
            if m:
                out.append(Assign(file, n, m.group(1), m.group(2).strip(), s))
            elif _NAME.match(s):
                out.append(Assign(file, n, s, None, s))
            else:
                raise ParseError(f"{file}:{n}: not a recipe, an assignment or a block: {s!r}")

    def recipe(n: int, s: str, depth: int) -> Recipe:
        m = _RECIPE.match(s)
        if not m:
            raise ParseError(f"{file}:{n}: cannot read the recipe line {s!r}")
        flags = m.group(2).replace(" ", "").replace("\t", "")
        r = Recipe(file, n, flags, [s])
        bad = set(flags) - FOLDER_FLAGS
        if bad:
            raise ParseError(f"{file}:{n}: unknown recipe flag(s) {''.join(sorted(bad))!r}")
        while True:
            got = next_line()
            if got is None:
                raise ParseError(f"{file}:{n}: the recipe has no action line")
            cn, cs = got
            if cs.startswith("*"):
                r.conditions.append((cn, cs[1:].strip()))
                r.raw.append(cs)
                continue
            r.action_line = cn
            if cs.startswith("{"):
                rest = cs[1:].strip()
                if rest:
                    push_back(cn, rest)
                r.raw.append("{ ... }")
                r.block = items(depth + 1)
            else:
                r.action = _strip_comment(cs) if not cs.startswith("|") else cs
                r.raw.append(cs)
            return r

    return items(0)


# -- conversion ----------------------------------------------------------------------

class Converter:
    """Walks the parsed items and writes Sieve; collects warnings and notes."""

    def __init__(self, file: str, env: dict[str, str], read_file=None) -> None:
        self.file = file
        self.env = dict(env)
        self.static: dict[str, str] = dict(env)
        self.dynamic: set[str] = set()
        home = env.get("HOME", "/")
        self.static.setdefault("MAILDIR", home)
        self.static.setdefault("DEFAULT", "/var/mail/" + env.get("LOGNAME", env.get("USER", "user")))
        self.requires: set[str] = set()
        self.problems: list[Problem] = []
        self.notes: list[str] = []
        self.programs: dict[str, str] = {}
        self.kinds = {"maildir": 0, "mbox": 0}
        self.lines: list[str] = []
        self.counter = 0
        self.read_file = read_file or _read
        self.include_depth = 0
        self.spans: list[tuple] = []
        self.blanky: set[str] = set()  # run-time variables whose value may hold a blank
        self.success: str | None = None   # set to "1" by a formail -D recipe that found a duplicate
        self.prev_vars: tuple = (None, None)

    # -- output helpers
    def emit(self, indent: int, text: str) -> None:
        self.lines.append("    " * indent + text)

    def warn(self, item, text: str, indent: int = 0, raw: list[str] | None = None) -> None:
        self.problems.append(Problem(item.file, item.line, text))
        self.emit(indent, f"# UNTRANSLATED ({item.file}:{item.line}): {text}")
        for r in raw or []:
            self.emit(indent, "#   " + r)

    # Each recipe's and assignment's output sits between two marker comments, so that a
    # part the compiler refuses can be swapped for a warning (see check_compiles).
    def open_span(self, item, indent: int) -> int:
        self.spans.append((item, indent))
        self.emit(indent, checked.open_marker(len(self.spans) - 1))
        return len(self.spans) - 1

    def close_span(self, mark: int, indent: int) -> None:
        self.emit(indent, checked.close_marker(mark))

    def var(self, prefix: str) -> str:
        self.counter += 1
        self.requires.add("variables")
        return f"pm_{prefix}{self.counter}"

    # -- variables
    def expand(self, text: str, names: list[str], *, regex: bool = False) -> str:
        """Procmail's $VAR / ${VAR} / ${VAR:-x} / $\\VAR; unknown-until-run-time ones become placeholders."""
        out: list[str] = []
        i = 0
        while i < len(text):
            c = text[i]
            if c != "$" or i + 1 >= len(text):
                out.append(c)
                i += 1
                continue
            quote = False
            j = i + 1
            if text[j] == "\\":
                quote = True
                j += 1
            default = None
            if j < len(text) and text[j] == "{":
                end = text.find("}", j)
                if end < 0:
                    out.append(c)
                    i += 1
                    continue
                inner = text[j + 1:end]
                m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)(?::?[-+](.*))?$", inner)
                if not m:
                    raise Untranslatable(f"${{{inner}}} is not a substitution procmail or Sieve can do")
                name, default = m.group(1), m.group(2)
                if default is not None and not re.match(r"^[A-Za-z_]\w*:?-", inner):
                    raise Untranslatable(f"${{{inner}}} (the :+ form) is not translated")
                i = end + 1
            else:
                m = re.match(r"[A-Za-z_][A-Za-z0-9_]*", text[j:])
                if not m:
                    if text[j] in "$#?=_-" or text[j].isdigit():
                        raise Untranslatable(f"the procmail pseudo variable ${text[j]} has no Sieve equivalent")
                    out.append(c)
                    i += 1
                    continue
                name = m.group(0)
                i = j + len(name)
            out.append(self.lookup(name, default, names, quote, regex))
        return "".join(out)

    def lookup(self, name: str, default, names: list[str], quote: bool, regex: bool) -> str:
        if name in self.dynamic or name == "MATCH":
            if quote:
                raise Untranslatable(f"$\\{name} of a variable set at run time (use :quoteregex by hand)")
            if name not in names:
                names.append(name)
            return chr(prx.VAR_BASE + names.index(name))
        if name == "LASTFOLDER":
            raise Untranslatable("LASTFOLDER has no Sieve equivalent")
        value = self.static.get(name, "")
        if not value and default is not None:
            value = default
        if quote:
            value = "".join("\\" + ch if ch in "\\^$.[]|()?*+" else ch for ch in value)
        return value

    def render_str(self, text: str, names: list[str]) -> str:
        """Expanded text (with placeholders) -> a Sieve string literal, ${name} for run-time values."""
        out = text
        for k, name in enumerate(names):
            out = out.replace(chr(prx.VAR_BASE + k), "${" + name + "}")
        if names:
            self.requires.add("variables")
        out, encoded = prx.encode_breaks(out)
        if encoded:
            self.requires.add("encoded-character")
        return sieve_str(out)

    def value(self, raw: str, names: list[str]) -> str:
        """The value of an assignment, shell-quoting rules of procmail."""
        out: list[str] = []
        i = 0
        while i < len(raw):
            c = raw[i]
            if c == "'":
                end = raw.find("'", i + 1)
                end = len(raw) if end < 0 else end
                out.append(raw[i + 1:end])
                i = end + 1
            elif c == '"':
                end = i + 1
                while end < len(raw) and raw[end] != '"':
                    end += 2 if raw[end] == "\\" else 1
                out.append(self.expand(raw[i + 1:end].replace('\\"', '"'), names))
                i = end + 1
            elif c == "`":
                raise Untranslatable("a value from a `command` has no Sieve equivalent "
                                     "(vnd.dovecot.execute :output could do it by hand)")
            elif c.isspace():
                break
            else:
                end = i
                while end < len(raw) and not raw[end].isspace() and raw[end] not in "'\"`":
                    end += 1
                out.append(self.expand(raw[i:end], names))
                i = end
        return "".join(out)

    # -- the walk
    def convert(self, items: list) -> None:
        """Emit the whole rc; falling off its end is Sieve's implicit keep, i.e. DEFAULT."""
        self.block(items, 0, guards=[], in_copy=None, conditional=False)

    def block(self, items: list, indent: int, guards: list[str], in_copy: str | None, conditional: bool) -> bool:
        """Emit a list of items; returns False when an unconditional SWITCHRC ended it."""
        recipes = [it for it in items if isinstance(it, Recipe)]
        needs_matched = set()  # recipes whose conditions a later A/a recipe reads
        needs_success = set()  # formail -D recipes whose outcome a later a/e recipe reads
        last_plain = None
        prev = None
        for r in recipes:
            if "e" in r.flags and prev is not None and _is_dup(prev):
                needs_matched.add(id(prev))
                needs_success.add(id(prev))
            if "A" in r.flags or "a" in r.flags:
                if last_plain is not None:
                    needs_matched.add(id(last_plain))
                    if "a" in r.flags and _is_dup(last_plain):
                        needs_success.add(id(last_plain))
            else:
                last_plain = r
            prev = r
        chain_of: dict[int, str] = {}
        for prev, r in zip(recipes, recipes[1:]):
            if "E" in r.flags:
                name = chain_of.get(id(prev)) or self.var("else")
                chain_of[id(prev)] = chain_of[id(r)] = name
        matched_var: str | None = None
        success_var: str | None = None
        prev_vars: tuple = (None, None)
        for it in items:
            if isinstance(it, Assign):
                mark = self.open_span(it, indent)
                ok = self.assign(it, indent, guards, conditional)
                self.close_span(mark, indent)
                if not ok:
                    return False
                continue
            own_matched = self.var("m") if id(it) in needs_matched else None
            own_success = self.var("ok") if id(it) in needs_success else None
            mv, sv = matched_var, success_var
            if "A" not in it.flags and "a" not in it.flags:
                matched_var, success_var = own_matched, own_success
            mark = self.open_span(it, indent)
            self.success = own_success
            self.prev_vars = prev_vars
            self.recipe(it, indent, guards, in_copy, conditional, mv, own_matched, chain_of.get(id(it)), sv)
            self.close_span(mark, indent)
            prev_vars = (own_matched, own_success)
        return True

    def assign(self, it: Assign, indent: int, guards: list[str], conditional: bool) -> bool:
        name = it.name
        if name in IGNORED_VARS:
            self.emit(indent, f"# {it.raw}  -- ignored: {IGNORED_VARS[name]}")
            return True
        if name in ("INCLUDERC", "SWITCHRC"):
            return self.include(it, indent, guards, conditional)
        if name in ("HOST", "DELIVERED", "TRAP", "LASTFOLDER", "MATCH", "SHIFT"):
            self.warn(it, f"{name}= has no Sieve equivalent", indent, [it.raw])
            return True
        names: list[str] = []
        try:
            value = self.value(it.value or "", names)
        except Untranslatable as e:
            self.warn(it, str(e), indent, [it.raw])
            self.dynamic.add(name)
            self.static.pop(name, None)
            return True
        if name in ("MAILDIR", "DEFAULT"):
            if conditional or names:
                self.warn(it, f"{name} set inside a condition or from a run-time value: "
                          "the converter uses one fixed MAILDIR/DEFAULT", indent, [it.raw])
                return True
            if name == "MAILDIR" and value and not value.startswith("/"):
                value = posixpath.normpath(posixpath.join(self.static["MAILDIR"], value))
            self.static[name] = value
            self.emit(indent, f"# {it.raw}  -- folders are mapped relative to it at conversion time")
            return True
        if it.value is None:
            value = ""
        if any(n in self.blanky for n in names):
            self.blanky.add(name)
        else:
            self.blanky.discard(name)
        if conditional or names or guards:
            self.dynamic.add(name)
            self.static.pop(name, None)
        else:
            self.static[name] = value
        self.requires.add("variables")
        self.emit(indent, f"set {sieve_str(name)} {self.render_str(value, names)};")
        return True

    def include(self, it: Assign, indent: int, guards: list[str], conditional: bool) -> bool:
        names: list[str] = []
        try:
            path = self.value(it.value or "", names)
        except Untranslatable as e:
            self.warn(it, str(e), indent, [it.raw])
            return True
        if names:
            self.warn(it, f"{it.name} with a run-time file name", indent, [it.raw])
            return True
        if not path.startswith("/"):
            path = posixpath.join(self.static["MAILDIR"], path)
        if self.include_depth > 8:
            self.warn(it, f"{it.name} nested too deeply (a loop?)", indent, [it.raw])
            return True
        try:
            text = self.read_file(path)
        except OSError as e:
            self.warn(it, f"{it.name}: cannot read {path}: {e.strerror}", indent, [it.raw])
            return True
        try:
            sub = parse(text, path)
        except ParseError as e:
            self.warn(it, f"{it.name}: {e}", indent, [it.raw])
            return True
        self.emit(indent, f"# {it.raw}  -- {path} follows")
        self.include_depth += 1
        saved, self.file = self.file, path
        ok = self.block(sub, indent, guards, None, conditional)
        self.file = saved
        self.include_depth -= 1
        self.emit(indent, f"# end of {path}")
        if it.name == "SWITCHRC" and ok:
            self.end_of_rc(indent)
            self.emit(indent, "stop;")
            return conditional  # unconditional: the rest of this file is never read
        return ok

    def end_of_rc(self, indent: int) -> None:
        self.emit(indent, "keep;")  # DEFAULT is the delivery root: INBOX

    # -- recipes
    def recipe(self, r: Recipe, indent: int, guards: list[str], in_copy: str | None, conditional: bool,
               matched_var: str | None, own_matched: str | None, chain: str | None,
               success_var: str | None = None) -> None:
        self.emit(indent, f"# {r.file}:{r.line}: " + " ".join(s for s in r.raw[:1]))
        flags = r.flags
        tests: list[str] = list(guards)
        if "e" in flags and self.prev_vars[1]:
            # after `| formail -D`: its "failure" is "not a duplicate"
            tests += [f'string :is "${{{self.prev_vars[0]}}}" "1"', f'string :is "${{{self.prev_vars[1]}}}" ""']
        elif "e" in flags:
            self.warn(r, "the e flag (run when the previous action failed): Sieve actions only fail after "
                      "the script has run", indent, r.raw[1:])
            return
        if "a" in flags and success_var:
            tests.append(f'string :is "${{{success_var}}}" "1"')
        elif "a" in flags:
            self.problems.append(Problem(r.file, r.line, "the a flag is translated like A: Sieve cannot "
                                         "see whether the previous action succeeded"))
            self.emit(indent, "# (approximate) the a flag is translated like A")
        if "A" in flags or "a" in flags:
            if matched_var is None:
                self.warn(r, "A/a flag without a preceding recipe on this level", indent, r.raw[1:])
                return
            tests.append(f'string :is "${{{matched_var}}}" "1"')
        if "E" in flags and chain:
            tests.append(f'string :is "${{{chain}}}" ""')
        try:
            stages = self.conditions(r)
        except Untranslatable as e:
            self.warn(r, str(e), indent, r.raw[1:])
            return
        stages[0] = (tests + stages[0][0],) + stages[0][1:]
        for stage in stages:
            if stage[1] is not None:  # the folder names below see this MATCH
                self.dynamic.add("MATCH")
                (self.blanky.add if stage[3] else self.blanky.discard)("MATCH")
        depth = sum(1 for stage in stages if stage[0])
        try:
            body = self.action(r, indent + depth, in_copy, conditional or depth > 0, guards)
        except Untranslatable as e:
            self.warn(r, str(e), indent, r.raw[1:])
            return
        # Procmail reads the conditions in order and sets MATCH as soon as a \/ condition
        # matched, for the conditions after it: one nested `if` per \/ condition.
        level = indent
        for st, group, lost_space, blank in stages:
            if st:
                test = st[0] if len(st) == 1 else "allof(" + ",\n{}      ".format("    " * level).join(st) + ")"
                self.emit(level, f"if {test} {{")
                level += 1
            if group is not None:
                self.requires.add("variables")
                self.emit(level, f'set "MATCH" "{" " if lost_space else ""}${{{group}}}";')
                self.dynamic.add("MATCH")
        if own_matched:
            self.emit(level, f'set "{own_matched}" "1";')
        if self.success:
            self.emit(level, f'set "{self.success}" "";')
        if chain:
            self.emit(level, f'set "{chain}" "1";')
        self.lines.extend(body)
        while level > indent:
            level -= 1
            self.emit(level, "}")

    def conditions(self, r: Recipe) -> list[tuple[list[str], int | None, bool, bool]]:
        """The recipe's conditions as stages (tests, MATCH's group after them, MATCH lost its blanks,
        the MATCH may be blank):
        a stage ends after each \\/ condition."""
        comparator = ' :comparator "i;octet"' if "D" in r.flags else ""
        area = ("H" in r.flags or "B" not in r.flags, "B" in r.flags)
        tests: list[str] = []
        stages: list[tuple[list[str], int | None, bool, bool]] = []
        lost_space = False
        for line, cond in r.conditions:
            lost = blank = approx = False
            neg = False
            text = cond
            names: list[str] = []
            if re.match(r"^-?\d+(\.\d+)?\s*\^\s*-?\d", text):
                raise Untranslatable(f"line {line}: weighted (scoring) conditions have no Sieve equivalent")
            while text.startswith("!"):
                neg = not neg
                text = text[1:].strip()
            if text.startswith("$"):
                text = self.expand(text[1:].strip(), names, regex=True)
                while text.startswith("!"):
                    neg = not neg
                    text = text[1:].strip()
            if text.startswith("?"):
                raise Untranslatable(f"line {line}: a `? program` condition (exit code of a shell command)")
            m = re.match(r"^([<>])\s*(\d+)\s*$", text)
            group = None
            if m:
                t = f"size :{'under' if m.group(1) == '<' else 'over'} {m.group(2)}"
                note = ("procmail's < and > count the From_ line it puts above the header (about 50 bytes); "
                        "Sieve's size is the message as received")
                if note not in self.notes:
                    self.notes.append(note)
            else:
                if text.startswith("\\"):
                    text = text[1:]
                m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)\s*\?\?\s*(.*)$", text)
                search = area
                if m and m.group(1) in ("H", "B", "HB", "BH"):
                    search = ("H" in m.group(1), "B" in m.group(1))
                    text = m.group(2)
                    m = None
                if m:
                    var, rx = m.group(1), m.group(2)
                    rend = prx.text_pattern(rx, names)
                    subject = "${" + var + "}" if (var in self.dynamic or var == "MATCH") else \
                        self.static.get(var, "").replace("${", "$ {")
                    self.requires.update(("regex", "variables"))
                    t = f"string :regex{comparator or CASEMAP} {sieve_str(subject)} {self.render_str(rend.text, names)}"
                    group = rend.match_group
                    blank = rend.match_blank
                    approx = rend.approx
                else:
                    parts: list[str] = []
                    if search[0]:
                        hts = prx.header_tests(text, comparator, names)
                        for h in hts:
                            if h.match_group is not None:
                                group = h.match_group
                                lost = h.lost_space
                                blank = h.match_blank
                                approx = h.approx
                        if group is not None and (len(hts) > 1 or search[1]):
                            raise Untranslatable(f"line {line}: \\/ in a condition with alternatives")
                        parts += [self.fix_vars(h.text, names) for h in hts]
                        if any(" envelope " in " " + h.text for h in hts):
                            self.requires.add("envelope")
                    if search[1]:
                        rend = prx.text_pattern(text, names)
                        if group is None and rend.match_group is not None:
                            raise Untranslatable(f"line {line}: \\/ in a body condition: Sieve's body test "
                                                 "sets no match variables (RFC 5173)")
                        parts.append(f"body :raw :regex{comparator or CASEMAP} {self.render_str(rend.text, names)}")
                        self.requires.add("body")
                    self.requires.add("regex")
                    t = parts[0] if len(parts) == 1 else "anyof(" + ", ".join(parts) + ")"
            if neg:
                t = f"not {t}"
                group = None
            lost_space = lost and group is not None
            if group is not None:
                stages.append((tests + [t], group, lost_space, blank))
                tests, lost_space = [], False
                if approx:
                    self.problems.append(Problem(r.file, line, "(approximate) procmail matches the part left of "
                                                 "\\/ as short as possible, POSIX regular expressions as long "
                                                 "as possible: MATCH may differ (exact when that part is "
                                                 "fixed text, or .* and fixed text)"))
                if lost:
                    self.problems.append(Problem(r.file, line, "(approximate) MATCH starts right after the colon: "
                                                 "procmail keeps the header's own blanks there, the script puts "
                                                 "one space"))
            else:
                tests.append(t)
        stages.append((tests, None, False, False))
        return stages

    def fix_vars(self, text: str, names: list[str]) -> str:
        for k, name in enumerate(names):
            text = text.replace(chr(prx.VAR_BASE + k), "${" + name + "}")
        if names:
            self.requires.add("variables")
        return text

    # -- actions
    def action(self, r: Recipe, indent: int, in_copy: str | None, conditional: bool,
               guards: list[str]) -> list[str]:
        """The Sieve lines for the action (already indented)."""
        saved = self.lines
        self.lines = []
        try:
            self._action(r, indent, in_copy, conditional, guards)
            return self.lines
        finally:
            self.lines = saved

    def _finish(self, indent: int, copy: bool, in_copy: str | None) -> None:
        if copy:
            return
        if in_copy:
            self.emit(indent, f'set "{in_copy}" "1";')
        else:
            self.emit(indent, "stop;")

    def _action(self, r: Recipe, indent: int, in_copy: str | None, conditional: bool,
                guards: list[str]) -> None:
        flags = r.flags
        copy = "c" in flags or in_copy is not None
        if r.block is not None:
            if "c" in flags:
                done = self.var("done")
                self.emit(indent, "# a c block: a copy of the message runs through it, the original skips it")
                self.block(r.block, indent, [f'string :is "${{{done}}}" ""'], done, True)
            else:
                # Inside a c block the copy's "done" flag still guards what follows.
                self.block(r.block, indent, guards if in_copy else [], in_copy, conditional)
            return
        action = r.action or ""
        names: list[str] = []
        if action.startswith("!"):
            addrs = [a for a in self._words(action[1:], names) if not a.startswith("-")]
            if not addrs:
                raise Untranslatable("! without an address")
            self._part_flags(r, "forward")
            note = ("a forward (redirect) is queued durably in the outbound queue (by `deliver` too) and sent "
                    "by `fetchdeliver daemon`, `fetchdeliver lmtp` or `fetchdeliver queue flush`")
            if note not in self.notes:
                self.notes.append(note)
            for a in addrs:
                if copy:
                    self.requires.add("copy")
                self.emit(indent, f"redirect {':copy ' if copy else ''}{self.render_str(a, names)};")
            self._finish(indent, "c" in flags, in_copy)
            return
        m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)\s*=\s*\|(.*)$", action)
        if action.startswith("|") or m:
            self.program(r, m.group(2) if m else action[1:], m.group(1) if m else None, indent, copy, in_copy)
            return
        self.folders(r, action, indent, copy, in_copy)

    def _part_flags(self, r: Recipe, what: str) -> None:
        if ("h" in r.flags) != ("b" in r.flags):
            raise Untranslatable(f"{'h' if 'h' in r.flags else 'b'} alone: Sieve always passes the whole "
                                 f"message to a {what}")

    def _words(self, text: str, names: list[str]) -> list[str]:
        import shlex

        try:
            words = shlex.split(text, comments=False, posix=True)
        except ValueError as e:
            raise Untranslatable(f"cannot split {text.strip()!r}: {e}") from None
        return [self.expand(w, names) for w in words]

    def program(self, r: Recipe, command: str, capture: str | None, indent: int, copy: bool,
                in_copy: str | None) -> None:
        command = command.strip()
        if not command:
            raise Untranslatable("| without a program (write the message to stdout)")
        quote = None
        for ch in command:
            if quote:
                quote = None if ch == quote else quote
            elif ch in "'\"":
                quote = ch
            elif ch in SHELL_METAS:
                raise Untranslatable(f"the command needs a shell ({ch!r}); Sieve runs one program with "
                                     "arguments: put the pipeline in a script in pipe_bin_dir")
        names: list[str] = []
        words = self._words(command, names)
        prog, args = words[0], words[1:]
        if chr(prx.VAR_BASE) <= prog[:1] or any(ord(c) >= prx.VAR_BASE for c in prog):
            raise Untranslatable("a program name from a run-time variable")
        base = posixpath.basename(prog)
        if base == "formail" and "-D" in args:
            self.duplicate(r, args, indent, copy, in_copy)
            return
        self.programs[base] = prog
        argtext = (" [" + ", ".join(self.render_str(a, names) for a in args) + "]") if args else ""
        if capture:
            self.requires.update(("vnd.dovecot.execute", "variables"))
            self.dynamic.add(capture)
            self.static.pop(capture, None)
            self.emit(indent, f"execute :pipe :output {sieve_str(capture)} {sieve_str(base)}{argtext};")
            return
        if "f" in r.flags:
            if ("h" in r.flags) != ("b" in r.flags) and not (base == "formail" and "h" in r.flags):
                self._part_flags(r, "filter")
            if in_copy is not None:
                raise Untranslatable("a filter inside a c block would change the original message too")
            self.requires.add("vnd.dovecot.filter")
            # The test form: a failing filter leaves the message as it was, like procmail.
            self.emit(indent, f"if not filter {sieve_str(base)}{argtext} {{ }}")
            return
        self._part_flags(r, "program")
        self.requires.add("vnd.dovecot.pipe")
        if copy:
            self.requires.add("copy")
        self.emit(indent, f"pipe {':copy ' if copy else ''}{sieve_str(base)}{argtext};")
        self._finish(indent, "c" in r.flags, in_copy)

    def duplicate(self, r: Recipe, args: list[str], indent: int, copy: bool, in_copy: str | None) -> None:
        """`| formail -D LEN CACHE`: a message whose Message-ID is in CACHE is swallowed (Sieve duplicate)."""
        k = args.index("-D")
        others = [a for a in args[:k] + args[k + 3:]]
        if others or len(args) < k + 3:
            raise Untranslatable("formail -D with other options (only `formail -D LEN CACHE` is translated)")
        if not ("w" in r.flags or "W" in r.flags):
            raise Untranslatable("formail -D without w or W: procmail ignores its exit code, so every "
                                 "message ends here")
        handle = posixpath.basename(args[k + 2]) or "formail"
        self.requires.add("duplicate")
        self.emit(indent, f"if duplicate :handle {sieve_str(handle)} {{")
        if self.success:
            self.emit(indent + 1, f'set "{self.success}" "1";')
        if copy:
            self.emit(indent, "}")
            return
        self.emit(indent + 1, "discard;")
        self._finish(indent + 1, False, in_copy)
        self.emit(indent, "}")

    def folders(self, r: Recipe, action: str, indent: int, copy: bool, in_copy: str | None) -> None:
        names: list[str] = []
        targets = self._words(action, names)
        if not targets:
            raise Untranslatable("no action")
        split = [n for n in names if n in self.blanky]
        if split and '"' not in action and "'" not in action:
            self.problems.append(Problem(r.file, r.action_line, f"(approximate) ${split[0]} may hold a blank: "
                                         "procmail splits an unquoted value there into several folders, "
                                         "the script uses one folder"))
        self._part_flags(r, "mailbox")
        out: list[str] = []
        for t in targets:
            if t == "/dev/null":
                out.append("discard;" if not copy else "")
                continue
            if t.endswith("/.") and len(t) > 2:
                t = t[:-2]
                note = f"MH folder {t}/. becomes the mailbox of that name (fetchdeliver stores Maildir or mbox)"
                if note not in self.notes:
                    self.notes.append(note)
            else:
                self.kinds["maildir" if t.endswith("/") else "mbox"] += 1
            mailbox = self.mailbox(t.rstrip("/"))
            if mailbox == "INBOX":
                out.append("keep;")
            else:
                self.requires.add("fileinto")
                if copy:
                    self.requires.add("copy")
                out.append(f"fileinto {':copy ' if copy else ''}{self.render_str(mailbox, names)};")
        for o in out:
            if o:
                self.emit(indent, o)
        self._finish(indent, "c" in r.flags, in_copy)

    def mailbox(self, path: str) -> str:
        """A procmail folder path -> a mailbox name under the delivery root."""
        maildir = self.static.get("MAILDIR", "/").rstrip("/") or "/"
        default = self.static.get("DEFAULT", "").rstrip("/")
        if path.startswith("/"):
            full = posixpath.normpath(path)
        else:
            full = posixpath.normpath(posixpath.join(maildir, path))
        if full == default or full == maildir:
            return "INBOX"
        roots = [maildir] + ([default] if default and self.static.get("DEFAULT", "").endswith("/") else [])
        for root in roots:
            if full.startswith(root.rstrip("/") + "/"):
                rel = full[len(root.rstrip("/")) + 1:]
                break
        else:
            raise Untranslatable(f"{path} is outside MAILDIR ({maildir}); give it a mailbox name by hand")
        parts = rel.split("/")
        if len(parts) == 1 and parts[0].startswith(".") and len(parts[0]) > 1:
            parts = parts[0][1:].split(".")  # Maildir++ .a.b -> a/b
        return "/".join(parts)


class Result:
    """A converted rc file: the Sieve text, the warnings, and the [delivery]/[sieve] settings it needs."""

    def __init__(self, script: str, problems: list[Problem], config: str) -> None:
        self.script, self.problems, self.config = script, problems, config
        self.mailbox: Callable[[str], str] = str  # folder path -> mailbox name, for `convert --check`
        self.static: dict[str, str] = {}     # MAILDIR, DEFAULT, ... as the conversion ended
        self.programs: dict[str, str] = {}

    @property
    def complete(self) -> bool:
        return not self.problems


def _is_dup(r: Recipe) -> bool:
    """A `| formail -D LEN CACHE` recipe (its success, i.e. a duplicate, is known to the script)."""
    return bool(r.action and re.match(r"^\|\s*(\S*/)?formail\s(.*\s)?-D\s", r.action))


def _read(path: str) -> str:
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        return f.read()


def default_env() -> dict[str, str]:
    """HOME, LOGNAME, USER as procmail would see them for the current user."""
    env = {k: os.environ[k] for k in ("HOME", "LOGNAME", "USER") if k in os.environ}
    if "LOGNAME" not in env:
        import pwd

        try:
            env["LOGNAME"] = pwd.getpwuid(os.getuid()).pw_name
        except KeyError:
            env["LOGNAME"] = str(os.getuid())
    env.setdefault("HOME", os.path.expanduser("~"))
    return env


def convert(text: str, file: str = "<stdin>", *, env: dict[str, str] | None = None,
            read_file=None, pipe_bin_dir: str | None = None) -> Result:
    """Convert procmailrc text; raises ParseError when it is not procmailrc syntax."""
    items = parse(text, file)
    c = Converter(file, env if env is not None else default_env(), read_file)
    c.convert(items)

    def on_fail(n, message, indent):
        if n is None:
            c.problems.append(Problem(file, 0, f"internal error, the script did not compile: {message}"))
            return [f"# UNTRANSLATED: the converted script did not compile ({message}); please report this"]
        item = c.spans[n][0]
        c.problems.append(Problem(item.file, item.line, f"the translation does not compile: {message}"))
        raw = item.raw if isinstance(item.raw, list) else [item.raw]
        return [f"# UNTRANSLATED ({item.file}:{item.line}): the translation does not compile: {message}"] + \
            ["#   " + r for r in raw]

    if any("${hex:" in ln for ln in c.lines):
        c.requires.add("encoded-character")  # the newlines in body and variable patterns
    body = checked.make_compile(c.lines, c.requires, on_fail)
    reqs = sorted(c.requires)
    maildir = c.static.get("MAILDIR", "")
    default = c.static.get("DEFAULT", "")
    is_maildir = default.endswith("/") or (c.kinds["maildir"] >= c.kinds["mbox"] and c.kinds["maildir"] > 0)
    cfg = ["[delivery]"]
    if is_maildir:
        root = default.rstrip("/") if default.endswith("/") else maildir
        cfg.append(f"maildir = {_toml(root)}")
    else:
        cfg.append(f"mbox = {_toml(default)}")
        cfg.append(f"mbox_folders = {_toml(maildir)}")
    ext = [f"+{e}" for e in reqs if e.startswith("vnd.dovecot.")]
    if ext:
        cfg += ["", "[sieve]", "extensions = [" + ", ".join(_toml(e) for e in ext) + "]",
                f"pipe_bin_dir = {_toml(pipe_bin_dir or '~/.local/lib/fetchdeliver/bin')}"]
    head = [f"# Converted from {file} by `fetchdeliver convert procmailrc`.",
            "# Folders are mailboxes under the delivery root (procmail's MAILDIR); DEFAULT is INBOX.",
            "# The settings this script expects:"]
    head += ["#   " + line if line else "#" for line in cfg]
    if c.programs:
        head.append("# Programs it runs (link or copy them into pipe_bin_dir):")
        head += [f"#   {name} -> {path}" for name, path in sorted(c.programs.items())]
    if "regex" in c.requires:
        c.notes.append("Sieve compares header values with RFC 2047 =?..?= words decoded and folded lines "
                       "joined; procmail sees them as sent")
    head += [f"# Note: {n}" for n in c.notes]
    if c.problems:
        head.append(f"# {len(c.problems)} part(s) not translated exactly: see the UNTRANSLATED comments.")
    out = head + [""]
    if reqs:
        out.append("require [" + ", ".join(sieve_str(r) for r in reqs) + "];")
        out.append("")
    out += body
    result = Result("\n".join(out) + "\n", c.problems, "\n".join(cfg) + "\n")
    result.mailbox = c.mailbox        # folder path -> mailbox name, for `convert --check`
    result.static = dict(c.static)   # MAILDIR, DEFAULT, ... as the conversion ended
    result.programs = dict(c.programs)
    return result


def _toml(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
