"""Source text -> compiled Script: parse, validate, resolve included scripts."""

from __future__ import annotations

import os

from fetchdeliver.sieve import FORMAT, Script
from fetchdeliver.sieve.cache import digest
from fetchdeliver.sieve.errors import SieveCompileError, SieveSyntaxError
from fetchdeliver.sieve.parser import MAX_BLOCK_NESTING, MAX_TEST_NESTING, parse
from fetchdeliver.sieve.registry import HARNESS, Enabled
from fetchdeliver.sieve.validate import validate


MAX_SCRIPT_SIZE = 1 << 20  # Pigeonhole's sieve_max_script_size default (1M)


def check_size(size: int, name: str, options: dict | None) -> None:
    """Refuse a script larger than [sieve] max_script_size before any parsing (0: no limit)."""
    limit = (options or {}).get("max_script_size", MAX_SCRIPT_SIZE)
    if limit and size > limit:
        raise SieveCompileError([SieveSyntaxError(
            f"script is too large ({size} bytes; max_script_size is {limit} bytes)", name, 1, 1)])


def _decode(raw: bytes, name: str) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise SieveCompileError([SieveSyntaxError("invalid UTF-8 in script", name, line, column)]) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    return text


class _Unit:
    """One compiled (main or included) script."""

    def __init__(self, name: str, code: list, requires: list[str], includes: list) -> None:
        self.name = name
        self.code = code
        self.requires = requires
        self.includes = includes
        self.warnings: list[str] = []


def _compile_unit(text: str, name: str, options: dict | None, enabled: Enabled,
                  locate=None) -> _Unit:
    opts = options or {}
    nodes = parse(text, name, max_block_nesting=opts.get("max_block_nesting", MAX_BLOCK_NESTING),
                  max_test_nesting=opts.get("max_test_nesting", MAX_TEST_NESTING))
    try:
        v = validate(nodes, name, enabled, options, locate)
    except SieveCompileError as e:
        e.phase = "validation"
        raise
    unit = _Unit(name, v.code, list(v.required), v.includes)  # type: ignore[attr-defined]
    unit.warnings = [str(w).replace(": error: ", ": warning: ", 1) for w in v.warnings]
    return unit


def include_path(location: str, name: str, options: dict | None, base_dir: str | None) -> str | None:
    """Where an included script lives: DIR/NAME.sieve in the personal or global directory."""
    opts = options or {}
    if location == "global":
        directory = opts.get("global_dir")
    else:
        directory = opts.get("personal_dir") or base_dir
    if not directory:
        return None
    path = os.path.join(directory, name)
    if not name.endswith(".sieve") and not os.path.exists(path):
        path += ".sieve"
    return path


MAX_INCLUDES = 255       # Pigeonhole's sieve_include_max_includes
MAX_INCLUDE_NESTING = 10  # and sieve_include_max_nesting_depth


def _option_int(opts: dict, key: str, default: int) -> int:
    try:
        return int(opts.get(key) or default)
    except (TypeError, ValueError):
        return default


def _build(text: str, name: str, path: str | None, options: dict | None, base_dir: str | None,
           deps: list) -> Script:
    opts = options or {}
    enabled = Enabled(opts.get("extensions"), harness=opts.get("testsuite_harness") is HARNESS)

    def locate(location: str, iname: str) -> str | None:
        """The file of an included script, or None when it does not exist (validation asks)."""
        ipath = include_path(location, iname, options, base_dir)
        return ipath if ipath is not None and os.path.isfile(ipath) else None

    main = _compile_unit(text, name, options, enabled, locate)
    includes: dict = {}
    requires = list(main.requires)
    errors: list[SieveSyntaxError] = []
    max_includes = _option_int(opts, "include_max_includes", MAX_INCLUDES)
    max_depth = _option_int(opts, "include_max_nesting_depth", MAX_INCLUDE_NESTING)

    def resolve(unit: _Unit, stack: list[str], depth: int) -> bool:
        """Compile what `unit` includes (as Pigeonhole does when it generates code: each failure
        is reported at the include command of every script on the way down, then no more)."""
        for location, iname, optional, line, column, *more in unit.includes:
            if errors:
                return False  # no more includes once something failed
            once = bool(more and more[0])
            key = f"{location}:{iname}"
            ipath = include_path(location, iname, options, base_dir)
            # A script is the file it is read from: the main script is in the loop only when the
            # include names its own file.
            ident = os.path.abspath(ipath) if ipath is not None else key
            if depth >= max_depth:
                errors.append(SieveSyntaxError(f"cannot nest includes deeper than {max_depth} levels",
                                               unit.name, line, column))
                return False
            if ident in stack:
                if once:
                    continue  # include :once of a script being included: a no-op, not a loop (RFC 6609 3.2)
                errors.append(SieveSyntaxError("circular include", unit.name, line, column))
                return False
            if key in includes:
                continue
            if len(includes) >= max_includes:
                errors.append(SieveSyntaxError(f"failed to include script '{iname}': no more than "
                                               f"{max_includes} includes allowed", unit.name, line, column))
                return False
            if ipath is None or not os.path.isfile(ipath):
                if optional:
                    includes[key] = None
                    continue
                where = "no directory configured for it" if ipath is None else f"{ipath} not found"
                errors.append(SieveSyntaxError(
                    f"included {location} script '{iname}' does not exist ({where})", unit.name, line, column))
                return False
            with open(ipath, "rb") as f:
                raw = f.read()
            deps.append([os.path.abspath(ipath), digest(raw)])
            try:
                check_size(len(raw), ipath, options)
                sub = _compile_unit(_decode(raw, ipath), ipath, options, enabled, locate)
            except SieveCompileError as e:
                errors.extend(e.errors)
                errors.append(SieveSyntaxError(f"failed to compile included script '{iname}'",
                                               unit.name, line, column))
                return False
            includes[key] = {"name": ipath, "code": sub.code, "requires": sub.requires}
            for r in sub.requires:
                if r not in requires:
                    requires.append(r)
            if not resolve(sub, stack + [ident], depth + 1):
                errors.append(SieveSyntaxError(f"failed to generate code for included script '{iname}'",
                                               unit.name, line, column))
                return False
        return True

    resolve(main, [os.path.abspath(path) if path else "personal:" + os.path.basename(name).removesuffix(".sieve")],
            0)
    if errors:
        error = SieveCompileError(errors)
        error.phase = "generation"
        raise error
    data = {"format": FORMAT, "name": name, "path": path, "code": main.code, "requires": requires,
            "main_requires": main.requires, "includes": includes, "deps": deps}
    if main.warnings:
        data["warnings"] = main.warnings
    return Script(data)


def _guarded_build(text: str, name: str, path: str | None, options: dict | None,
                   base_dir: str | None) -> Script:
    try:
        return _build(text, name, path, options, base_dir, [])
    except RecursionError:
        # The nesting limits keep the compiler's recursion shallow; should a construct still go too
        # deep, it is this script's compile error, never a traceback.
        raise SieveCompileError([SieveSyntaxError("script is nested too deeply to compile", name, 1, 1)]) \
            from None


def compile_source(text: str, name: str = "script", *, options: dict | None = None) -> Script:
    if len(text) > (options or {}).get("max_script_size", MAX_SCRIPT_SIZE) // 4:
        check_size(len(text.encode("utf-8", "surrogatepass")), name, options)
    return _guarded_build(text, name, None, options, None)


def compile_bytes(raw: bytes, path: str, *, options: dict | None = None) -> Script:
    check_size(len(raw), path, options)
    text = _decode(raw, path)
    return _guarded_build(text, path, path, options, os.path.dirname(os.path.abspath(path)))
