"""The registry of Sieve commands, tests, tags, match types, comparators and extensions.

Extension API
-------------
An extension is one module under ``fetchdeliver/sieve/extensions/``. It creates
an ``Extension`` object named ``EXT`` and declares on it what it adds; the
module is imported only when a script requires the extension (at compile time
for validation, at run time for the handlers), so it must stay cheap to import
(no lark, re, email, dataclasses, typing, logging at module level)::

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
  "list". ``check(v, node, out)`` is an optional compile-time hook that may
  inspect the parsed node, fix up ``out`` (the compiled tuple as a list) and
  report errors with ``v.error(message, node_or_arg)``.
- ``tag(command, name, type=None, check=None)`` adds a tag to a command of
  another extension or of the core (e.g. ``:copy`` on fileinto and redirect).
- ``group_tag(group, name, type=None)`` adds a member to a tag group (e.g.
  ``:regex`` to "match", ``:user`` to "address-part").
- ``match_type(name)``, ``comparator(name)``, ``address_part(name)`` register the
  run-time implementations (see ``fetchdeliver.sieve.matching`` for their
  signatures).
- ``implies`` lists other extensions that become available with this one.

The compiled node handed to a handler is the tuple
``(name, line, tags, args, sub, block)`` (tests have no ``block``) where tags
is a dict keyed by tag name without colon ("match", "comparator" and "part"
hold the group choices), args the positional values and sub the nested tests.
"""

from __future__ import annotations

# Extension name -> module under fetchdeliver.sieve.extensions.
MODULES = {
    "fileinto": "fileinto",
    "envelope": "envelope",
    "encoded-character": "encoded_character",
    "variables": "variables",
    "copy": "copy",
    "imap4flags": "imap4flags",
    "reject": "reject",
    "ereject": "reject",
    "relational": "relational",
    "subaddress": "subaddress",
    "body": "body",
    "regex": "regex",
    "mailbox": "mailbox",
    "ihave": "ihave",
    "environment": "environment",
    "date": "date",
    "index": "index",
    "editheader": "editheader",
    "vacation": "vacation",
    "vacation-seconds": "vacation",
    "include": "include",
    "enotify": "enotify",
    "duplicate": "duplicate",
    "vnd.dovecot.duplicate": "duplicate",   # Pigeonhole's older name; implies duplicate
    "mime": "mime",
    "foreverypart": "mime",
    "extracttext": "mime",
    "spamtest": "spamtest",
    "spamtestplus": "spamtest",
    "virustest": "spamtest",
    "vnd.dovecot.pipe": "extprograms",
    "vnd.dovecot.filter": "extprograms",
    "vnd.dovecot.execute": "extprograms",
    "vnd.dovecot.debug": "vnd_debug",
    "special-use": "special_use",
    "mailboxid": "mailboxid",
    "replace": "mime_edit",
    "enclose": "mime_edit",
    "extlists": "extlists",
    "fcc": "fcc",
    "vnd.dovecot.report": "vnd_report",
    "imapflags": "imapflags",   # the deprecated draft of imap4flags
    "notify": "deprecated_notify",   # the deprecated draft of enotify
    "vnd.dovecot.environment": "vnd_environment",
    # The Pigeonhole testsuite's own extension: only `fetchdeliver sieve testsuite` enables it
    # (see HARNESS_ONLY); a module path with dots is imported as it stands.
    "vnd.dovecot.testsuite": "fetchdeliver.sieve.testsuite.extension",
    "comparator-i;ascii-numeric": "",   # the comparator lives in the core
    "comparator-i;octet": "",
    "comparator-i;ascii-casemap": "",
}

# Requiring the key makes the listed extensions available too.
IMPLIES = {"spamtestplus": ("spamtest",), "vacation-seconds": ("vacation",),
           "vnd.dovecot.environment": ("environment",), "vnd.dovecot.duplicate": ("duplicate",)}

# Pigeonhole's defaults: these need sieve_extensions = +NAME to be used.
DISABLED_BY_DEFAULT = {"editheader", "ereject", "spamtest", "spamtestplus", "virustest", "vacation-seconds",
                       "vnd.dovecot.pipe", "vnd.dovecot.filter", "vnd.dovecot.execute",
                       "vnd.dovecot.debug", "vnd.dovecot.environment", "vnd.dovecot.duplicate",
                       "special-use",
                       # RFCs Pigeonhole 0.5.19 lacks: on request, like ereject
                       "mailboxid", "replace", "enclose", "extlists", "fcc", "vnd.dovecot.report", "imapflags", "notify"}
# Extensions that cannot be required together (name -> {other: why}).
CONFLICTS = {
    "imapflags": {"imap4flags": "the (deprecated) imapflags extension cannot be used together with "
                                "the imap4flags extension"},
    "imap4flags": {"imapflags": "the (deprecated) imapflags extension cannot be used together with "
                                "the imap4flags extension"},
    "notify": {"enotify": "the (deprecated) notify extension cannot be used together with the enotify "
                          "extension"},
    "enotify": {"notify": "the (deprecated) notify extension cannot be used together with the enotify "
                          "extension"},
}
# Never enabled by a setting: only the testsuite harness passes HARNESS in its options.
HARNESS_ONLY = {"vnd.dovecot.testsuite"}
HARNESS = object()  # options["testsuite_harness"] is HARNESS: a value no config file can hold
# Always there, cannot be required by name in Pigeonhole either way.
IMPLICIT = {"comparator-i;octet", "comparator-i;ascii-casemap"}


class Spec:
    """What a command or test accepts; `run` is its run-time handler."""

    __slots__ = ("name", "kind", "args", "tags", "groups", "block", "tests", "check", "run", "ext")

    def __init__(self, name: str, kind: str, run, ext: str, args=(), tags=None, groups=(),
                 block: bool = False, tests=0, check=None) -> None:
        self.name = name
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

    def __init__(self, name: str, implies: tuple[str, ...] = ()) -> None:
        self.name = name
        self.implies = implies
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
        self._pending.extend(ext.extra_tags)
        self._apply_pending()

    def _apply_pending(self) -> None:
        left = []
        for item in self._pending:
            command, tag, ty, check, ext_name = item
            spec = self.commands.get(command) or self.tests.get(command)
            if spec is None:
                left.append(item)
                continue
            spec.tags[tag] = (ty, ext_name)
            if check is not None:
                self.tag_checks[(command, tag)] = check
        self._pending = left


_MODULE_CACHE: dict[str, Extension] = {}


def load_extension(name: str) -> Extension | None:
    """Import the module of extension `name`; None for names served by the core."""
    module = MODULES.get(name)
    if not module:
        return None
    ext = _MODULE_CACHE.get(module)
    if ext is None:
        path = module if "." in module else "fetchdeliver.sieve.extensions." + module
        mod = __import__(path, fromlist=["EXT"])
        ext = mod.EXT
        _MODULE_CACHE[module] = ext
    return ext


def build(required) -> Registry:
    """A registry with the core and the modules of the `required` extensions."""
    from fetchdeliver.sieve import core

    reg = Registry()
    reg.add(core.EXT)
    for name in required:
        ext = load_extension(name)
        if ext is not None:
            reg.add(ext)
    return reg


def enabled_extensions(setting=None, harness: bool = False) -> set[str]:
    """The extensions a script may require, from a Pigeonhole-style sieve_extensions setting.

    `setting` is a list (or space-separated string) of names; "+name" enables,
    "-name" disables, bare names replace the default set.
    """
    default = set(MODULES) - DISABLED_BY_DEFAULT - HARNESS_ONLY
    if not setting:
        return default | HARNESS_ONLY if harness else default
    items = setting.split() if isinstance(setting, str) else list(setting)
    if any(i[:1] not in "+-" for i in items):
        enabled = set()
    else:
        enabled = set(default)
    for item in items:
        if item.startswith("+"):
            enabled.add(item[1:])
        elif item.startswith("-"):
            enabled.discard(item[1:])
        else:
            enabled.add(item)
    enabled = (enabled & set(MODULES)) - HARNESS_ONLY
    return enabled | HARNESS_ONLY if harness else enabled
