"""Check parsed commands against the registry and produce the compiled (plain data) form.

Every problem is collected with its line and column; the caller raises one
SieveCompileError holding them all.
"""

from __future__ import annotations

from fetchdeliver.sieve import registry
from fetchdeliver.sieve.errors import SieveCompileError, SieveSyntaxError
from fetchdeliver.sieve.parser import Arg, Node

GROUP_KEYS = {"comparator": "comparator", "match": "match", "address-part": "part"}
GROUP_LABELS = {"comparator": "COMPARATOR", "match": "MATCH-TYPE", "address-part": "ADDRESS-PART"}
TYPE_LABELS = {"string": "a string", "strings": "a string list", "number": "a number", "tag": "a tag"}
MAX_ERRORS = 20  # reported per script; the option max_compile_errors changes it (0: all)


class Validator:
    """One script's validation state: required extensions, errors, the registry in force."""

    def __init__(self, file: str, enabled: "registry.Enabled | set[str] | None" = None,
                 options: dict | None = None, locate=None) -> None:
        self.file = file
        self.locate = locate  # (location, name) -> the included script's file or None; None: not checked
        self.enabled = enabled if enabled is not None else registry.Enabled()
        self.options = options or {}
        self.errors: list[SieveSyntaxError] = []
        self.warnings: list[SieveSyntaxError] = []  # accepted, but worth telling (as Pigeonhole warns)
        self.required: list[str] = []
        self.reg = registry.build([])
        self.includes: list[tuple[str, str, int, int]] = []  # (location, name, line, column)
        self.reported_unknown: set[str] = set()
        self.reported_tags: set[tuple[str, str]] = set()
        self.scratch: dict = {}  # per-extension state while validating (e.g. the variables declared)  # (command, tag): unknown tags, told once
        self.variables = False
        self.loops: list = []  # the :name of each enclosing foreverypart (None: unnamed), for break
        self.bad_arguments = False  # the last command's tags could not be read

    # -- errors ----------------------------------------------------------
    def error(self, message: str, where) -> None:
        line = getattr(where, "line", 0)
        column = getattr(where, "column", 0)
        limit = self.options.get("max_compile_errors", MAX_ERRORS)
        if not limit or len(self.errors) < limit:
            self.errors.append(SieveSyntaxError(message, self.file, line, column))

    def warning(self, message: str, where) -> None:
        self.warnings.append(SieveSyntaxError(message, self.file, getattr(where, "line", 0),
                                              getattr(where, "column", 0)))

    def has(self, ext: str) -> bool:
        return ext in self.required

    # -- require ---------------------------------------------------------
    def require(self, name: str, where) -> None:
        if name in self.required:
            return
        if name in registry.IMPLICIT:
            self.required.append(name)
            return
        if name not in self.enabled:
            self.error(f"require: unknown Sieve capability '{name}'", where)
            return
        ext = registry.load_extension(name)
        if ext is None:  # pragma: no cover - Enabled only admits names with a module
            return
        if ext.delivery_only and self.options.get("imap_events"):
            self.error(f"require: the {name} extension is not applicable to scripts run for IMAP events "
                       f"(RFC 6785 section 3.11)", where)
            return
        for other in self.required:
            other_ext = registry.load_extension(other)
            why = ext.conflicts.get(other) or (other_ext.conflicts.get(name) if other_ext else None)
            if why:
                # Not loaded (as in Pigeonhole): the names it would define keep their first meaning.
                self.error(why, where)
                return
        self.add_required(name, ext)

    def add_required(self, name: str, ext) -> None:
        self.required.append(name)
        self.reg.add(ext)
        if name == "variables":
            self.variables = True
        for implied in ext.implies:
            if implied not in self.required:
                implied_ext = registry.load_extension(implied)
                if implied_ext is not None:
                    self.add_required(implied, implied_ext)

    # -- blocks ----------------------------------------------------------
    def script(self, nodes: list[Node]) -> list:
        at_start = True
        rest = []
        first = None
        for node in nodes:
            if node.name == "require" and at_start:
                self.require_command(node)
                first = first or node
            else:
                at_start = False
                rest.append(node)
        for name in list(self.required):
            ext = registry.load_extension(name)
            for needed in (ext.needs if ext is not None else ()):
                if needed not in self.required:
                    self.error(f"the {name} extension cannot be used without the {needed} extension", first)
        return self.block(rest)

    def require_command(self, node: Node) -> None:
        # As any command: the arguments, then the tests, then the block; the first wrong one is
        # reported and the capabilities are not loaded.
        if len(node.args) != 1 or node.args[0].kind not in ("string", "strings"):
            self.error("the require command expects one string list argument (the capabilities)", node)
            if node.tests:
                self.error("the require command does not take a test", node)
            return
        if node.tests:
            self.error("the require command does not take a test", node)
            return
        if node.block is not None:
            self.error("the require command does not take a block", node)
            return
        values = node.args[0].value
        for name in ([values] if isinstance(values, str) else values):
            self.require(name, node.args[0])

    def block(self, nodes: list[Node]) -> list:
        out: list = []
        chain = None  # the branches list of the last if, while elsif/else may follow
        for node in nodes:
            name = node.name
            if name == "require":
                self.error("require commands can only be placed at top level at the beginning of the file",
                           node)
                chain = None
                continue
            if name in ("elsif", "else"):
                if chain is None:
                    self.error(f"the {name} command must follow an if or elsif command", node)
                    # An elsif is still an elsif: what follows it is not told again (as Pigeonhole).
                    chain = [] if name == "elsif" else None
                    continue
                compiled = self.command(node)
                if compiled is not None:
                    chain.append([compiled[4], compiled[5]])
                if name == "else":
                    chain = None
                continue
            compiled = self.command(node)
            if compiled is None:
                chain = None
                continue
            if name == "if":
                chain = [[compiled[4], compiled[5]]]
                out.append(("if", compiled[1], {}, [], chain, None))
            else:
                chain = None
                out.append(compiled)
        return out

    # -- commands and tests -------------------------------------------------
    # The order is Pigeonhole's (sieve-validator.c), so that a script with several mistakes gets the
    # same errors: the arguments (stopping at the first bad one), the sub-tests and the block as
    # the command's kind wants them, the command's own checks (only when all that was right),
    # then the nested tests and the block, validated whatever happened above.
    def subtests_ok(self, node: Node, spec, what: str) -> bool:
        # Pigeonhole's wording (its testsuite matches it).
        if spec.tests == 1:
            if not node.tests:
                self.error(f"the {node.name} {what} requires one sub-test, but none is specified", node)
                return False
            if len(node.tests) != 1 or node.test_list:
                self.error(f"the {node.name} {what} requires one sub-test, but a list of tests is specified",
                           node)
                return False
        elif spec.tests == "list":
            if not node.tests and not node.test_list:
                self.error(f"the {node.name} {what} requires a list of sub-tests, but none is specified "
                           f"(a test list '( ... )')", node)
                return False
            if not node.test_list:
                self.error(f"the {node.name} {what} requires a list of sub-tests, but a single test is "
                           f"specified (a test list '( ... )')", node)
                return False
        elif node.tests:
            first = node.tests[0]
            if first.name not in self.reg.tests and first.name not in self.reg.commands and \
                    (first.name in spec.tags or any(first.name in self.reg.groups[g] for g in spec.groups)):
                self.error(f"missing colon ':' before ':{first.name}' tag in {node.name} {what}", node)
            elif first.name in self.reg.tests:
                self.error(f"the {node.name} {what} accepts no sub-tests, but tests are specified", first)
            else:
                self.error(f"missing semicolon ';' after {node.name} {what}", node)
            return False
        return True

    def block_ok(self, node: Node, spec) -> bool:
        if spec.block and node.block is None:
            self.error(f"the {node.name} command requires a command block, but it is missing", node)
            return False
        if not spec.block and node.block is not None:
            self.error(f"the {node.name} command does not accept a command block, but one is specified "
                       f"anyway (expected ';')", node)
            return False
        return True

    def subtests(self, node: Node, spec):
        if spec.tests == 1:
            return self.test(node.tests[0]) if node.tests else None
        if spec.tests == "list":
            return [self.test(t) for t in node.tests]
        return None

    def command(self, node: Node):
        spec = self.reg.commands.get(node.name)
        if spec is None or (spec.ext != "core" and spec.ext not in self.required):
            self.unknown(node, "command")
            if node.block is not None:
                self.block(node.block)  # what is inside is still looked at (Pigeonhole does)
            return None
        tags, args = self.arguments(node, spec)
        ok = not self.bad_arguments
        if not ok:
            self.subtests_ok(node, spec, "command")  # a missing ':' turns a tag into a test
        else:
            ok = self.subtests_ok(node, spec, "command") and self.block_ok(node, spec)
        out = [node.name, node.line, tags, args, None, None]
        if ok:
            self.run_checks(spec, node, out)
        sub = self.subtests(node, spec)
        out[4] = sub
        if node.name in ("if", "elsif") and sub is not None and sub[0] == "ihave" and node.block is not None:
            # ihave is decided now (as Pigeonhole does): a block that needs what we lack is not validated.
            caps = sub[3][0] if sub[3] else []
            from fetchdeliver.sieve.extensions.ihave import NOT_BY_IHAVE

            if all(c in self.enabled and c not in registry.IMPLICIT and c not in NOT_BY_IHAVE for c in caps):
                for c in caps:
                    self.require(c, node)
                out[4] = ("true", node.line, {}, [], None)
            else:
                out[4] = ("false", node.line, {}, [], None)
                out[5] = []
                return tuple(out)
        if spec.block and node.block is not None:
            loop = node.name == "foreverypart"
            if loop:
                self.loops.append(tags.get("name") if isinstance(tags.get("name"), str) else None)
            out[5] = self.block(node.block)
            if loop:
                self.loops.pop()
        elif node.block is not None:
            self.block(node.block)
        if node.name == "else":
            out[4] = None
        return tuple(out)

    def test(self, node: Node):
        if not node.is_test:
            return None
        spec = self.reg.tests.get(node.name)
        if spec is None or (spec.ext != "core" and spec.ext not in self.required):
            self.unknown(node, "test")
            return ("false", node.line, {}, [], None)
        tags, args = self.arguments(node, spec)
        ok = not self.bad_arguments
        if not ok:
            self.subtests_ok(node, spec, "test")
        else:
            ok = self.subtests_ok(node, spec, "test")
        out = [node.name, node.line, tags, args, None]
        if ok:
            self.run_checks(spec, node, out)
        out[4] = self.subtests(node, spec)
        return tuple(out)

    def unknown(self, node: Node, kind: str) -> None:
        other = self.reg.tests if kind == "command" else self.reg.commands
        if node.name in other:
            # Known, but in the wrong place: say so every time (as Pigeonhole does).
            other_kind = "test" if kind == "command" else "command"
            self.error(f"attempted to use {other_kind} '{node.name}' as {kind}", node)
            return
        if node.name in self.reported_unknown:
            return
        self.reported_unknown.add(node.name)
        hint = ""
        for ext_name in registry.capabilities():
            ext = registry.load_extension(ext_name)
            if ext is None or ext_name in self.required:
                continue
            table = ext.commands if kind == "command" else ext.tests
            if node.name in table and table[node.name].ext == ext_name:
                hint = f" (missing require \"{ext_name}\")"
                break
        self.error(f"unknown {kind} '{node.name}'{hint}", node)

    def run_checks(self, spec, node: Node, out: list) -> None:
        if spec.check is not None:
            spec.check(self, node, out)
        if out[2].get("match") == "regex":
            from fetchdeliver.sieve.extensions.regex import check_keys

            check_keys(self, node, out)
        done = []
        for tag in list(out[2]):
            check = self.reg.tag_checks.get((spec.name, tag))
            if check is not None and check not in done:
                done.append(check)
                check(self, node, out)

    def arguments(self, node: Node, spec) -> tuple[dict, list]:
        """The tags and positional values; at the first problem an error and no more (Pigeonhole
        does not "whine multiple times about a single command having multiple bad arguments")."""
        kind = "test" if node.is_test else "command"
        what = f"the {node.name} {kind}"
        tags: dict = {}
        args = node.args
        self.bad_arguments = False

        def bad() -> tuple[dict, list]:
            self.bad_arguments = True
            return self.defaults(spec, tags, node, check=False), []

        def lookup(t: str):
            found = spec.tags.get(t)
            group = None
            if found is None:
                for g in spec.groups:
                    if t in self.reg.groups[g]:
                        found = self.reg.groups[g][t]
                        group = g
                        break
            if found is not None and found[1] not in ("core", "*") and found[1] not in self.required:
                found = None
            return found, group

        # Every tag is looked up first, wherever it stands (as Pigeonhole): an unknown one is told
        # once per command name and ends the command's checks.
        for a in args:
            if a.kind == "tag" and lookup(a.value)[0] is None:
                if (node.name, a.value) not in self.reported_tags:
                    self.reported_tags.add((node.name, a.value))
                    self.error(f"unknown tagged argument ':{a.value}' for {what} "
                               f"(reported only once at first occurrence)", a)
                return bad()
        i = 0
        n = len(args)
        while i < n and args[i].kind == "tag":
            a = args[i]
            i += 1
            t = a.value
            found, group = lookup(t)
            assert found is not None
            ty = found[0]
            key = GROUP_KEYS[group] if group else t
            if key in tags:
                if group:
                    self.error(f"encountered duplicate {GROUP_LABELS[group]} argument (:{t}) for {what}", a)
                else:
                    self.error(f"encountered duplicate tag ':{t}' for {what}", a)
                return bad()
            value = True
            if ty is not None:
                if i >= n or args[i].kind == "tag":
                    self.error(f"the :{t} tag for {what} requires {TYPE_LABELS[ty]} as parameter, "
                               f"but no parameters were found", a)
                    return bad()
                if not self.fits(args[i], ty):
                    self.error(f"the :{t} tag for {what} requires {TYPE_LABELS[ty]} as parameter, "
                               f"but {TYPE_LABELS[args[i].kind]} was found", args[i])
                    return bad()
                value = self.coerce(args[i], ty, "")
                i += 1
            if group == "match":
                tags["match"] = t
                if ty is not None:
                    tags["relation"] = value
            elif group == "comparator":
                tags["comparator"] = value
            elif group == "address-part":
                tags["part"] = t
            else:
                tags[t] = value
        positional = args[i:]
        for a in positional:
            if a.kind == "tag":
                self.error(f"encountered an unexpected tagged argument ':{a.value}' while validating "
                           f"positional arguments for {what}", a)
                return bad()
        forms = spec.args
        form = None
        for f in forms:
            if len(f) == len(positional):
                form = f
                break
        if form is None:
            counts = sorted({len(f) for f in forms})
            expected = " or ".join(str(c) for c in counts)
            self.error(f"{what} requires {expected} positional argument(s), but {len(positional)} "
                       f"is/are specified", positional[0] if positional else node)
            return bad()
        values = []
        names = spec.names if len(spec.names) == len(form) else ()
        for idx, (a, ty) in enumerate(zip(positional, form)):
            if not self.fits(a, ty):
                label = f" ({names[idx]})" if names else ""
                self.error(f"{what} expects {TYPE_LABELS[ty]} as argument {idx + 1}{label}, but "
                           f"{TYPE_LABELS[a.kind]} was found", a)
                return bad()
            before = len(self.errors)
            values.append(self.coerce(a, ty, ""))
            if len(self.errors) > before:
                return bad()
        before = len(self.errors)
        tags = self.defaults(spec, tags, node)
        if len(self.errors) > before:
            self.bad_arguments = True
        return tags, values

    def string(self, s: str, where) -> str:
        """A string argument's value; with variables, its ${...} references are checked."""
        if "encoded-character" in self.required and "${" in s:
            from fetchdeliver.sieve.extensions.encoded_character import decode

            problems: list[str] = []
            s = decode(s, problems)
            for problem in problems:
                self.error(problem, where)
        if self.variables and "${" in s:
            from fetchdeliver.sieve.extensions.variables import check_references

            check_references(self, s, where)
        return s

    def decode(self, s: str) -> str:
        if "encoded-character" in self.required and "${" in s:
            from fetchdeliver.sieve.extensions.encoded_character import decode

            return decode(s)
        return s

    @staticmethod
    def fits(a: Arg, ty: str) -> bool:
        """Whether the argument is of the type (a string where a string list is wanted fits)."""
        return a.kind == ty or (ty == "strings" and a.kind == "string")

    def coerce(self, a: Arg, ty: str, label: str):
        if ty == "strings":
            if a.kind == "string":
                return [self.string(a.value, a)]
            if a.kind == "strings":
                return [self.string(s, a) for s in a.value]
        elif ty == "string":
            if a.kind == "string":
                return self.string(a.value, a)
        elif ty == "number":
            if a.kind == "number":
                return a.value
        self.error(f"{label} must be {TYPE_LABELS[ty]}, but {TYPE_LABELS[a.kind]} was found", a)
        return [] if ty == "strings" else ("" if ty == "string" else 0)

    def defaults(self, spec, tags: dict, node: Node, check: bool = True) -> dict:
        groups = spec.groups
        if "match" in groups:
            tags.setdefault("match", "is")
        if "comparator" in groups:
            default = "i;octet" if spec.name == "string" else "i;ascii-casemap"
            cmp = tags.setdefault("comparator", default)
            if check:
                self.check_comparator(cmp, tags, node)
        if "address-part" in groups:
            tags.setdefault("part", "all")
        if check and tags.get("match") in ("count", "value"):
            rel = tags.get("relation")
            if rel not in ("gt", "ge", "lt", "le", "eq", "ne"):
                self.error(f"invalid relational match type '{rel}' (expected gt, ge, lt, le, eq or ne)", node)
        return tags

    def check_comparator(self, cmp, tags: dict, node: Node) -> None:
        if cmp not in self.reg.comparators:
            self.error(f"unknown comparator '{cmp}'", node)
            return
        if cmp == "i;ascii-numeric" and tags.get("match") in ("contains", "matches", "regex"):
            self.error(f"the comparator 'i;ascii-numeric' does not support the :{tags['match']} match type",
                       node)

    # -- helpers for extension checks -------------------------------------
    @property
    def in_loop(self) -> int:
        """How many foreverypart loops enclose the command being validated."""
        return len(self.loops)

    def constant(self, s) -> bool:
        """True when a string has no variable references (its value is known now)."""
        return not (self.variables and "${" in s)


def validate(nodes: list[Node], file: str, enabled: "registry.Enabled | set[str] | None" = None,
             options: dict | None = None, locate=None) -> Validator:
    v = Validator(file, enabled, options, locate)
    v.code = v.script(nodes)  # type: ignore[attr-defined]
    if v.errors:
        raise SieveCompileError(v.errors)
    return v
