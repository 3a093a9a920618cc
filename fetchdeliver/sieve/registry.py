"""The registry of Sieve commands, tests, tags, match types, comparators and extensions.

Extension API
-------------
A capability is one module: capability NAME is
``fetchdeliver/sieve/extensions/NAME.py`` with ".", "-" and ";" written "_"
(module_path()); no table lists them. It creates an ``Extension`` object
named ``EXT`` (whose name is the capability) and declares on it what it adds;
the module is imported only when a script requires the extension (at compile
time for validation, at run time for the handlers), so it must stay cheap to
import (no lark, re, email, dataclasses, typing, logging at module level).
It imports ``registry``, ``runtime`` and other extensions' public names, never
the interpreter or the core (see runtime.py)::

    from fetchdeliver.sieve.registry import Extension

    EXT = Extension("fileinto")

    @EXT.command("fileinto", args=("string",), tags={"copy": None})
    def fileinto(ctx, node):
        name, line, tags, args, sub, block = node
        ctx.store(ctx.expand(args[0]), tags, line)

    @EXT.test("hasflag", args=("strings",), groups=("match", "comparator"))
    def hasflag(ctx, node) -> bool: ...

Declarations:

- ``command(name, args=..., tags=..., groups=..., block=False, tests=0, check=None)``
  and ``test(...)`` (same keywords) register a command or test. ``args`` lists
  the positional argument types: "string" (one string), "strings" (a string
  list; a single string is accepted), "number"; a tuple of such tuples gives
  alternative forms. ``tags`` maps a tag name (no colon) to the type of its
  argument or None for a plain flag. ``groups`` names tag groups the command
  accepts (at most one tag of each): "comparator", "match", "address-part".
  ``block`` is True for commands that take a block; ``tests`` is 0, 1 or
  "list". ``names`` says what each positional argument is ("header names"), for
  the errors. ``check(v, node, out)`` is an optional compile-time hook that may
  inspect the parsed node, fix up ``out`` (the compiled tuple as a list) and
  report errors with ``v.error(message, node_or_arg)``.
- ``tag(command, name, type=None, check=None)`` adds a tag to a command of
  another extension or of the core (e.g. ``:copy`` on fileinto and redirect).
- ``group_tag(group, name, type=None)`` adds a member to a tag group (e.g.
  ``:regex`` to "match", ``:user`` to "address-part").
- ``match_type(name)``, ``comparator(name)``, ``address_part(name)`` register the
  run-time implementations (see ``fetchdeliver.sieve.matching`` for their
  signatures).
- ``Extension(name, default=True, implies=(), conflicts=None)``: ``default``
  False keeps it off until ``[sieve] extensions = ["+name"]`` (Pigeonhole's
  defaults); ``implies`` lists capabilities that come along; ``conflicts``
  maps another capability to the error given when both are required; ``needs``
  lists capabilities a script must require too (extracttext needs foreverypart);
  ``delivery_only`` marks what only answers a delivery (reject, vacation): a script
  compiled for IMAP events (RFC 6785 3.11) may not require it.
- ``service(name)`` offers a function to the core and the interpreter (the
  names are listed in ``runtime.SERVICES``), found at run time in
  ``ctx.services``.

The compiled node handed to a handler is the tuple
``(name, line, tags, args, sub, block)`` (tests have no ``block``) where tags
is a dict keyed by tag name without colon ("match", "comparator" and "part"
hold the group choices), args the positional values and sub the nested tests.
"""

from __future__ import annotations

# The one place that knows where extensions live: capability NAME is the module
# fetchdeliver.sieve.extensions.<NAME with ".", "-" and ";" as "_"> (module_path()).
PACKAGE = "fetchdeliver.sieve.extensions"
# Extensions outside that package. The Pigeonhole testsuite's own extension: only
# `fetchdeliver sieve testsuite` enables it (HARNESS_ONLY).
OUTSIDE = {"vnd.dovecot.testsuite": "fetchdeliver.sieve.testsuite.extension"}
# Never enabled by a setting: only the testsuite harness passes HARNESS in its options.
HARNESS_ONLY = {"vnd.dovecot.testsuite"}
HARNESS = object()  # options["testsuite_harness"] is HARNESS: a value no config file can hold
# RFC 5228 2.7.3: always there (the core's comparators), may still be required by name.
IMPLICIT = {"comparator-i;octet", "comparator-i;ascii-casemap"}
CORE = "fetchdeliver.sieve.core"

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-;")


class Spec:
    """What a command or test accepts; `run` is its run-time handler."""

    __slots__ = ("name", "kind", "args", "tags", "groups", "block", "tests", "check", "run", "ext", "names")

    def __init__(self, name: str, kind: str, run, ext: str, args=(), tags=None, groups=(),
                 block: bool = False, tests=0, check=None, names=()) -> None:
        self.name = name
        self.names = tuple(names)  # what each positional argument is, for error messages
        self.kind = kind
        self.run = run
        self.ext = ext
        if args and isinstance(args[0], tuple):
            self.args = tuple(args)
        else:
            self.args = (tuple(args),)
        # tag name -> (type or None, extension that provides it)
        self.tags = {t: (ty, ext) for t, ty in (tags or {}).items()}
        self.groups = tuple(groups)
        self.block = block
        self.tests = tests
        self.check = check

    def clone(self) -> "Spec":
        other = Spec.__new__(Spec)
        for slot in Spec.__slots__:
            setattr(other, slot, getattr(self, slot))
        other.tags = dict(self.tags)
        return other


class Extension:
    """One Sieve extension's contributions (see the module docstring)."""

    def __init__(self, name: str, *, default: bool = True, implies: tuple[str, ...] = (),
                 conflicts: dict[str, str] | None = None, needs: tuple[str, ...] = (),
                 delivery_only: bool = False) -> None:
        self.name = name
        self.delivery_only = delivery_only  # meaningless outside delivery: an error for IMAP events
        self.needs = tuple(needs)           # capabilities the script must require with this one
        self.default = default              # enabled without a [sieve] extensions setting
        self.implies = tuple(implies)       # requiring this one makes these available too
        self.conflicts = dict(conflicts or {})  # other capability -> why they cannot go together
        self.services: dict = {}
        self.namespaces: set[str] = set()   # variable namespaces (${global.x}, ${env.x})
        self.commands: dict[str, Spec] = {}
        self.tests: dict[str, Spec] = {}
        self.extra_tags: list[tuple] = []  # (command, tag, type, check, extension)
        self.group_tags: list[tuple] = []  # (group, tag, type, extension)
        self.match_types: dict = {}
        self.comparators: dict = {}
        self.address_parts: dict = {}

    def command(self, name: str, ext: str | None = None, **kw):
        def deco(fn):
            self.commands[name] = Spec(name, "command", fn, ext or self.name, **kw)
            return fn
        return deco

    def test(self, name: str, ext: str | None = None, **kw):
        def deco(fn):
            self.tests[name] = Spec(name, "test", fn, ext or self.name, **kw)
            return fn
        return deco

    def tag(self, command: str, name: str, type=None, check=None, ext: str | None = None) -> None:
        self.extra_tags.append((command, name, type, check, ext or self.name))

    def group_tag(self, group: str, name: str, type=None, ext: str | None = None) -> None:
        self.group_tags.append((group, name, type, ext or self.name))

    def match_type(self, name: str):
        def deco(fn):
            self.match_types[name] = fn
            return fn
        return deco

    def comparator(self, name: str, impl) -> None:
        self.comparators[name] = impl

    def address_part(self, name: str):
        def deco(fn):
            self.address_parts[name] = fn
            return fn
        return deco

    def namespace(self, name: str) -> None:
        """Declare the variable namespace `name` (``${name.item}``): with this extension required,
        references to it are not "unknown namespace" errors."""
        self.namespaces.add(name.lower())

    def service(self, name: str):
        """Offer `fn` to the core and the interpreter under `name` (see SERVICES in runtime.py):
        how they reach an extension's code without importing it."""
        def deco(fn):
            self.services[name] = fn
            return fn
        return deco


class Registry:
    """The commands, tests and tags in force for one script (core + required extensions)."""

    def __init__(self) -> None:
        self.commands: dict[str, Spec] = {}
        self.tests: dict[str, Spec] = {}
        # group -> tag -> (type, extension)
        self.groups: dict[str, dict[str, tuple]] = {"comparator": {}, "match": {}, "address-part": {}}
        self.tag_checks: dict[tuple[str, str], object] = {}
        self.match_types: dict = {}
        self.comparators: dict = {}
        self.address_parts: dict = {}
        self.services: dict = {}
        self.namespaces: set[str] = set()
        self.loaded: set[str] = set()
        self._pending: list = []

    def add(self, ext: Extension) -> None:
        if ext.name in self.loaded:
            return
        self.loaded.add(ext.name)
        for name, spec in ext.commands.items():
            self.commands[name] = spec.clone()
        for name, spec in ext.tests.items():
            self.tests[name] = spec.clone()
        for group, tag, ty, ext_name in ext.group_tags:
            self.groups[group][tag] = (ty, ext_name)
        self.match_types.update(ext.match_types)
        self.comparators.update(ext.comparators)
        self.address_parts.update(ext.address_parts)
        self.services.update(ext.services)
        self.namespaces |= ext.namespaces
        self._pending.extend(ext.extra_tags)
        self._apply_pending()

    def _apply_pending(self) -> None:
        left = []
        for item in self._pending:
            command, tag, ty, check, ext_name = item
            specs = [spec for spec in (self.commands.get(command), self.tests.get(command)) if spec is not None]
            if not specs:
                left.append(item)
                continue
            for spec in specs:  # a command and a test of one name (execute, filter) share their tags
                spec.tags[tag] = (ty, ext_name)
            if check is not None:
                self.tag_checks[(command, tag)] = check
        self._pending = left


_MODULE_CACHE: dict[str, Extension | None] = {}


def module_path(name: str) -> str | None:
    """The module that holds capability `name`, or None when no module could (a bad name)."""
    if name in OUTSIDE:
        return OUTSIDE[name]
    if not name or not set(name) <= _NAME_CHARS or not name[0].isalnum():
        return None
    return PACKAGE + "." + name.replace(".", "_").replace("-", "_").replace(";", "_")


def load_module(path: str) -> Extension:
    """The EXT of the module at `path` (a module's dotted path), imported once."""
    import importlib

    return importlib.import_module(path).EXT


def load_extension(name: str) -> Extension | None:
    """The extension of capability `name`; None when there is none (IMPLICIT ones included)."""
    if name in _MODULE_CACHE:
        return _MODULE_CACHE[name]
    ext = None
    path = module_path(name)
    if path is not None and name not in IMPLICIT:
        try:
            ext = load_module(path)
        except ModuleNotFoundError as e:
            if e.name != path:
                raise  # the module exists but an import inside it failed: a bug to report
        if ext is not None and ext.name != name:
            ext = None  # "vnd-dovecot-pipe" is not "vnd.dovecot.pipe"
    _MODULE_CACHE[name] = ext
    return ext


def core() -> Extension:
    return load_module(CORE)


def build(required) -> Registry:
    """A registry with the core and the modules of the `required` extensions."""
    reg = Registry()
    reg.add(core())
    for name in required:
        ext = load_extension(name)
        if ext is not None:
            reg.add(ext)
    return reg


def capabilities() -> list[str]:
    """Every capability there is (enabled or not, HARNESS_ONLY and IMPLICIT ones included): one
    per module of the extensions package. Imports them all: not for the MDA's path."""
    import pkgutil

    package = load_package()
    names = set(IMPLICIT) | set(OUTSIDE)
    for info in pkgutil.iter_modules(package.__path__):
        ext = load_module(PACKAGE + "." + info.name)
        names.add(ext.name)
    return sorted(names)


def load_package():
    import importlib

    return importlib.import_module(PACKAGE)


class Enabled:
    """The capabilities a script may require, from a Pigeonhole-style sieve_extensions setting:
    a list (or space-separated string) of names; "+name" enables, "-name" disables, bare names
    replace the default set (each extension's `default`). `name in enabled` imports only that
    name's module; .names() lists them all."""

    def __init__(self, setting=None, harness: bool = False) -> None:
        items = (setting.split() if isinstance(setting, str) else list(setting)) if setting else []
        self.harness = harness
        self.replace = any(i[:1] not in "+-" for i in items)
        self.explicit: dict[str, bool] = {}
        for item in items:
            if item[:1] in "+-":
                self.explicit[item[1:]] = item[0] == "+"
            else:
                self.explicit[item] = True

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        if name in HARNESS_ONLY:
            return self.harness
        if name in IMPLICIT:
            return True
        ext = load_extension(name)
        if ext is None:
            return False
        if name in self.explicit:
            return self.explicit[name]
        return ext.default and not self.replace

    def names(self) -> set[str]:
        return {name for name in capabilities() if name in self}


def enabled_extensions(setting=None, harness: bool = False) -> set[str]:
    """Every capability enabled by the setting (see Enabled); imports every extension module."""
    return Enabled(setting, harness).names()
