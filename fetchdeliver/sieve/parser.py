"""Parse Sieve text (grammar/sieve.lark, Lark LALR) into plain nodes with positions.

Only the compiler imports this module: a script loaded from the cache never
pays for Lark.
"""

from __future__ import annotations

import os
from pathlib import Path

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedToken

from fetchdeliver.sieve.errors import SieveCompileError, SieveSyntaxError

_PARSER: Lark | None = None


def grammar_text() -> str:
    """The grammar, from the installed package or from the source tree."""
    try:
        from importlib.resources import files

        return files("fetchdeliver.grammar").joinpath("sieve.lark").read_text(encoding="utf-8")
    except (ImportError, FileNotFoundError, OSError, TypeError):
        path = Path(__file__).resolve().parents[2] / "grammar" / "sieve.lark"
        return path.read_text(encoding="utf-8")


def _lark_cache() -> str | bool:
    """Where Lark keeps its analysed grammar (a private folder: the file is a pickle)."""
    from fetchdeliver.sieve import default_cache_dir

    folder = default_cache_dir()
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
    except OSError:
        return False
    return os.path.join(folder, "grammar.lark-cache")


def _parser() -> Lark:
    global _PARSER
    if _PARSER is None:
        # cache: Lark stores the LALR tables with the grammar's hash and rebuilds them when the
        # grammar or Lark changes; it saves ~20 ms on every compile in a fresh process.
        _PARSER = Lark(grammar_text(), parser="lalr", lexer="contextual",
                       propagate_positions=True, maybe_placeholders=False, cache=_lark_cache())
    return _PARSER


class Arg:
    """A positional or tagged argument: kind is "string", "strings", "number" or "tag"."""

    __slots__ = ("kind", "value", "line", "column")

    def __init__(self, kind: str, value, line: int, column: int) -> None:
        self.kind = kind
        self.value = value
        self.line = line
        self.column = column

    def __repr__(self) -> str:
        return f"Arg({self.kind}, {self.value!r})"


class Node:
    """A command (block is a list or None) or a test (block is always None)."""

    __slots__ = ("name", "line", "column", "args", "tests", "test_list", "block", "is_test")

    def __init__(self, name: str, line: int, column: int, args: list[Arg], tests: list["Node"],
                 test_list: bool, block: list["Node"] | None, is_test: bool) -> None:
        self.name = name
        self.line = line
        self.column = column
        self.args = args
        self.tests = tests
        self.test_list = test_list
        self.block = block
        self.is_test = is_test

    def __repr__(self) -> str:
        return f"Node({self.name!r}, {self.args!r}, {self.tests!r}, {self.block!r})"


# -- string literals ---------------------------------------------------------

def _crlf(text: str) -> str:
    # Pigeonhole stores every line break of a string literal as CRLF.
    return text.replace("\r\n", "\n").replace("\n", "\r\n")


def unquote(token: str) -> str:
    """A quoted string's value: backslash takes the next character literally."""
    body = token[1:-1]
    if "\\" in body:
        out = []
        i = 0
        n = len(body)
        while i < n:
            c = body[i]
            if c == "\\" and i + 1 < n:
                i += 1
                c = body[i]
            out.append(c)
            i += 1
        body = "".join(out)
    return _crlf(body)


def multiline(token: str) -> str:
    """A text: string's value: the lines between "text:" and ".", dot-unstuffed, CRLF ends."""
    first_nl = token.index("\n")
    lines = token[first_nl + 1:].split("\n")
    # The last two items are the "." terminator line and "" after its newline.
    lines = lines[:-2]
    out = []
    for line in lines:
        if line.endswith("\r"):
            line = line[:-1]
        if line.startswith(".."):
            line = line[1:]
        out.append(line + "\r\n")
    return "".join(out)


_UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
MAX_NUMBER = (1 << 64) - 1   # Pigeonhole's limit: 18446744073709551615 is a number, one more is not
MAX_IDENTIFIER = 32          # longer command, test and tag names are errors (as Pigeonhole's lexer)
MAX_ARGUMENTS = 32           # arguments of one command or test


def number(token: Token, file: str) -> int:
    text = str(token)
    unit = 1
    if text[-1:].lower() in _UNITS:
        unit = _UNITS[text[-1].lower()]
        text = text[:-1]
    value = int(text) * unit
    if value > MAX_NUMBER:
        raise SieveSyntaxError(f"number '{token}' is too large", file, token.line, token.column)
    return value


# -- tree to nodes -------------------------------------------------------------

def _string(tree: Tree) -> str:
    tok = tree.children[0]
    if tok.type == "MULTILINE_STRING":
        return multiline(str(tok))
    return unquote(str(tok))


MAX_BLOCK_NESTING = 32   # Pigeonhole's SIEVE_MAX_BLOCK_NESTING: 31 nested blocks are allowed
MAX_TEST_NESTING = 32    # and SIEVE_MAX_TEST_NESTING: a chain of 31 tests


class _Limits:
    __slots__ = ("file", "blocks", "tests", "errors")

    def __init__(self, file: str, blocks: int, tests: int) -> None:
        self.file = file
        self.blocks = blocks
        self.tests = tests
        self.errors: list[SieveSyntaxError] = []  # each problem once; the rest of the script is read on

    def error(self, message: str, tok) -> None:
        self.errors.append(SieveSyntaxError(message, self.file, tok.line, tok.column))


def _identifier(tok, lim: _Limits, kind: str = "identifier") -> None:
    text = str(tok)
    if len(text.lstrip(":")) > MAX_IDENTIFIER:
        lim.error(f"encountered impossibly long {kind} '{text[:30]}...' (at most {MAX_IDENTIFIER} characters)",
                  tok)


def _arguments(tree: Tree, lim: _Limits, depth: int) -> tuple[list[Arg], list[Node], bool]:
    file = lim.file
    args: list[Arg] = []
    tests: list[Node] = []
    test_list = False
    for child in tree.children:
        data = child.data
        if data == "string":
            tok = child.children[0]
            args.append(Arg("string", _string(child), tok.line, tok.column))
        elif data == "string_list":
            args.append(Arg("strings", [_string(s) for s in child.children], child.meta.line,
                            child.meta.column))
        elif data == "number":
            tok = child.children[0]
            try:
                value = number(tok, file)
            except SieveSyntaxError as e:
                lim.errors.append(e)
                value = 0
            args.append(Arg("number", value, tok.line, tok.column))
        elif data == "tag":
            tok = child.children[0]
            _identifier(tok, lim, "tag identifier")
            args.append(Arg("tag", str(tok)[1:].lower(), tok.line, tok.column))
        elif data == "test":
            tests.append(_test(child, lim, depth + 1))
        elif data == "test_list":
            test_list = True
            for t in child.children:
                tests.append(_test(t, lim, depth + 1))
    if len(args) > MAX_ARGUMENTS:
        lim.errors.append(SieveSyntaxError(f"too many arguments (more than {MAX_ARGUMENTS})", file,
                                           args[MAX_ARGUMENTS].line, args[MAX_ARGUMENTS].column))
    return args, tests, test_list


def _test(tree: Tree, lim: _Limits, depth: int) -> Node:
    """A test at `depth` (the test of a command is at 1): the depth is checked before going deeper."""
    ident, arguments = tree.children
    if depth >= lim.tests:
        lim.error(f"cannot nest tests deeper than {lim.tests} levels", ident)
        return Node("false", ident.line, ident.column, [], [], False, None, True)
    _identifier(ident, lim)
    args, tests, test_list = _arguments(arguments, lim, depth)
    return Node(str(ident).lower(), ident.line, ident.column, args, tests, test_list, None, True)


def _command(tree: Tree, lim: _Limits, level: int) -> Node:
    """A command inside `level` blocks (top level: 0)."""
    ident, arguments = tree.children[0], tree.children[1]
    _identifier(ident, lim)
    args, tests, test_list = _arguments(arguments, lim, 0)
    block = None
    if tree.data == "block_command":
        if level + 1 >= lim.blocks:
            lim.error(f"cannot nest command blocks deeper than {lim.blocks} levels", ident)
            return Node(str(ident).lower(), ident.line, ident.column, args, tests, test_list, [], False)
        block = [_command(c, lim, level + 1) for c in tree.children[2].children]
    return Node(str(ident).lower(), ident.line, ident.column, args, tests, test_list, block, False)


# -- error messages ------------------------------------------------------------

_NAMES = {
    "SEMICOLON": "';'", "LBRACE": "'{'", "RBRACE": "'}'", "LPAR": "'('", "RPAR": "')'",
    "COMMA": "','", "LSQB": "'['", "RSQB": "']'", "QUOTED_STRING": "a string",
    "MULTILINE_STRING": "a string", "NUMBER": "a number", "TAG": "a tag", "IDENTIFIER": "an identifier",
    "$END": "end of script",
}
_ORDER = ["SEMICOLON", "LBRACE", "RBRACE", "RPAR", "COMMA", "RSQB", "QUOTED_STRING", "LSQB", "NUMBER",
          "TAG", "IDENTIFIER", "LPAR", "$END"]


def _found(tok: Token) -> str:
    if tok.type == "$END":
        return "end of script"
    text = str(tok)
    if tok.type == "IDENTIFIER":
        return f"identifier '{text}'"
    if tok.type == "TAG":
        return f"tag '{text}'"
    if tok.type == "NUMBER":
        return f"number {text}"
    if tok.type in ("QUOTED_STRING", "MULTILINE_STRING"):
        if len(text) > 30:
            text = text[:27] + "..."
        return "string " + text.replace("\n", "\\n").replace("\r", "\\r")
    return f"'{text}'"


def _expected(names) -> str:
    seen = []
    for n in sorted(set(names), key=lambda x: _ORDER.index(x) if x in _ORDER else 99):
        label = _NAMES.get(n, n)
        if label not in seen:
            seen.append(label)
    if not seen:
        return "nothing"
    if len(seen) == 1:
        return seen[0]
    return ", ".join(seen[:-1]) + " or " + seen[-1]


def _context(e: UnexpectedToken) -> str:
    """Describe where the parser was: 'after fileinto arguments', 'in string list', ..."""
    stack = getattr(getattr(e, "state", None), "value_stack", None) or []
    for item in reversed(stack):
        if isinstance(item, Token):
            if item.type == "IDENTIFIER":
                return f" after {item} arguments"
            if item.type == "LSQB":
                return " in string list"
            if item.type == "LPAR":
                return " in test list"
            if item.type == "LBRACE":
                return " in block"
    return ""


def _token_error(e: UnexpectedToken, file: str) -> SieveSyntaxError:
    tok = e.token
    expected = set(e.expected or ())
    try:
        # LALR merges look-ahead sets of similar states; ask the parser what it really accepts.
        accepted = e.interactive_parser.accepts()
        if accepted:
            expected = set(accepted)
    except Exception:  # an older Lark without accepts(): keep the LALR set
        pass
    found = _found(tok)
    ctx = _context(e)
    if tok.type == "$END":
        line, column = _end_position(e)
    else:
        line, column = tok.line, tok.column
    if {"SEMICOLON", "LBRACE"} <= expected:
        msg = f"expected ';' or '{{'{ctx}, found {found}"
    elif expected == {"LBRACE"} or ("LBRACE" in expected and "SEMICOLON" not in expected
                                    and "IDENTIFIER" not in expected and "RBRACE" not in expected):
        msg = f"expected '{{'{ctx}, found {found}"
    elif "IDENTIFIER" in expected and "RBRACE" in expected and "SEMICOLON" not in expected:
        msg = f"expected a command or '}}', found {found}"
    elif "IDENTIFIER" in expected and "SEMICOLON" not in expected and "LBRACE" not in expected \
            and not expected & {"QUOTED_STRING", "TAG", "NUMBER", "COMMA", "RPAR", "RSQB"}:
        what = "a command" if not ctx else "a test"
        msg = f"expected {what}{ctx}, found {found}"
    else:
        msg = f"expected {_expected(expected)}{ctx}, found {found}"
    return SieveSyntaxError(msg, file, line, column)


def _end_position(e) -> tuple[int, int]:
    text = getattr(e, "_fd_text", "")
    line = text.count("\n") + 1
    column = len(text) - (text.rfind("\n") + 1) + 1
    return line, column


def _char_error(e: UnexpectedCharacters, text: str, file: str) -> SieveSyntaxError:
    pos = e.pos_in_stream
    line, column = e.line, e.column
    if text[pos:pos + 1] == ":" and text[:pos].lower().endswith("text") and column > 4:
        # The lexer took "text" as an identifier: report at the start of "text:".
        pos -= 4
        column -= 4
    rest = text[pos:]
    if rest.startswith('"'):
        msg = "unterminated quoted string"
    elif rest.startswith("/*"):
        msg = "unterminated comment (missing '*/')"
    elif rest[:5].lower() == "text:":
        after = rest[5:].split("\n", 1)[0].strip(" \t\r")
        if after and not after.startswith("#"):
            msg = "unexpected characters after 'text:' (a multi-line string starts on the next line)"
        else:
            msg = "unterminated multi-line string (missing a line holding a single '.')"
    elif rest[:1] == ":":
        msg = "invalid tag: ':' must be followed by an identifier"
    else:
        ch = rest[:1]
        shown = repr(ch) if ch.isprintable() and ch not in "'\\" else ascii(ch)
        if ch == "'":
            shown = "\"'\""
        msg = f"unexpected character {shown}"
        if ch.isdigit():
            msg = "invalid number"
    return SieveSyntaxError(msg, file, line, column)


MAX_SYNTAX_ERRORS = 20


def _boundaries(text: str) -> list[tuple[str, int]]:
    """The '{', '}', ';', '(', ')', '[' and ']' of a script with their offsets, outside strings
    and comments."""
    out: list[tuple[str, int]] = []
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c in "{};()[]":
            out.append((c, i))
            i += 1
        elif c == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j + 1
        elif c == "/" and text.startswith("/*", i):
            j = text.find("*/", i + 2)
            i = n if j < 0 else j + 2
        elif c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            i += 1
        elif c in "tT" and text[i:i + 5].lower() == "text:" and (i == 0 or not (text[i - 1].isalnum()
                                                                                  or text[i - 1] == "_")):
            j = text.find("\n", i)
            if j < 0:
                return out
            k = j + 1
            while k < n:  # the lines up to one holding a single "."
                e = text.find("\n", k)
                line = text[k:n if e < 0 else e].rstrip("\r")
                k = n if e < 0 else e + 1
                if line == ".":
                    break
            i = k
        else:
            i += 1
    return out


def _blank_statement(text: str, pos: int, length: int) -> str | None:
    """`text` with the command holding offset `pos` blanked out (spaces; line breaks kept, so
    later errors keep their lines and columns): from after the previous ';', '{' or '}' to its
    own ';', the end of its block, or the '}' that closes the block it is in. This is how
    Pigeonhole's parser recovers, so a script with several syntax errors reports them all."""
    marks = _boundaries(text)
    start = 0
    for c, off in marks:
        if off >= pos:
            break
        if c in "{};":
            start = off + 1
    # Inside a test list or string list a ';' does not end the command: count the open ones.
    parens = 0
    for c, off in marks:
        if start <= off < pos:
            parens += 1 if c in "([" else -1 if c in ")]" else 0
    parens = max(parens, 0)
    end = len(text)
    depth = 0
    for c, off in marks:
        if off < pos:
            continue
        if c in "([":
            parens += 1
        elif c in ")]":
            parens = max(parens - 1, 0)
        elif c == ";" and parens:
            continue
        elif c == "{":
            depth += 1
        elif c == "}":
            if depth == 0:
                end = off
                break
            depth -= 1
            if depth == 0:
                end = off + 1
                break
        elif depth == 0:  # ';'
            end = off + 1
            break
    if end <= start:
        end = pos + max(length, 1)  # the offending token itself (a stray '}')
    blanked = "".join(ch if ch in "\r\n" else " " for ch in text[start:end])
    out = text[:start] + blanked + text[end:]
    return None if out == text else out


def parse(text: str, file: str = "script", *, max_block_nesting: int = MAX_BLOCK_NESTING,
          max_test_nesting: int = MAX_TEST_NESTING) -> list[Node]:
    """Parse a script; raises SieveCompileError (holding every SieveSyntaxError found) on failure.

    Lark's LALR parser keeps its own stack, so a deeply nested script parses without
    recursion; turning the tree into nodes recurses, and stops at the nesting limits. After a
    syntax error in a command the command is skipped and parsing goes on (as Pigeonhole's
    parser recovers), so every such error is reported; an error of the lexer (an unterminated
    string or comment, a stray character) ends it.
    """
    errors: list[SieveSyntaxError] = []
    work = text
    while True:
        try:
            tree = _parser().parse(work)
            break
        except UnexpectedToken as e:
            e._fd_text = work  # type: ignore[attr-defined]
            errors.append(_token_error(e, file))
            tok = e.token
            if tok.type == "$END" or len(errors) >= MAX_SYNTAX_ERRORS:
                raise SieveCompileError(errors) from None
            repaired = _blank_statement(work, tok.start_pos, len(str(tok)))
            if repaired is None:
                raise SieveCompileError(errors) from None
            work = repaired
        except UnexpectedCharacters as e:
            error = _char_error(e, work, file)
            errors.append(error)
            if not error.message.startswith("unexpected character ") or len(errors) >= MAX_SYNTAX_ERRORS:
                raise SieveCompileError(errors) from None
            # Stray characters: the command they are in is skipped, as Pigeonhole's parser does
            # (which reports the command as unfinished too).
            errors.append(SieveSyntaxError("expected ';' or '{' to end the command, but found unknown characters",
                                           file, e.line, e.column))
            repaired = _blank_statement(work, e.pos_in_stream, 1)
            if repaired is None:
                raise SieveCompileError(errors) from None
            work = repaired
        except UnexpectedEOF:
            line = work.count("\n") + 1
            errors.append(SieveSyntaxError("unexpected end of script", file, line, 1))
            raise SieveCompileError(errors) from None
    lim = _Limits(file, max_block_nesting, max_test_nesting)
    nodes = [_command(c, lim, 0) for c in tree.children]  # the repaired script's own problems too
    errors.extend(lim.errors)
    if errors:
        errors.sort(key=lambda e: (e.line, e.column))
        raise SieveCompileError(errors)
    return nodes
