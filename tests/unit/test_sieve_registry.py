"""The Sieve extension registry: one module per capability, found by name; no import cycles."""

from __future__ import annotations

import ast
import pkgutil
from pathlib import Path

import pytest

import fetchdeliver.sieve.extensions as extensions_package
from fetchdeliver.sieve import compile_text, registry
from fetchdeliver.sieve.errors import SieveCompileError

SIEVE = Path(registry.__file__).resolve().parent


def extension_modules() -> list[str]:
    return sorted(info.name for info in pkgutil.iter_modules(extensions_package.__path__))


def test_every_module_in_extensions_is_a_registered_capability():
    modules = extension_modules()
    assert len(modules) > 40
    capabilities = registry.capabilities()
    for name in modules:
        ext = registry.load_module(f"{registry.PACKAGE}.{name}")
        assert isinstance(ext, registry.Extension), name
        # The module's name is its capability's: require "NAME" finds it without a table.
        assert registry.module_path(ext.name) == f"{registry.PACKAGE}.{name}", name
        assert registry.load_extension(ext.name) is ext
        assert ext.name in capabilities
    # Nothing else is listed: the implicit comparators and the harness-only extension.
    assert set(capabilities) == ({registry.load_module(f"{registry.PACKAGE}.{m}").name for m in modules}
                                 | registry.IMPLICIT | set(registry.OUTSIDE))


def test_the_capability_list_is_what_require_accepts():
    every = registry.capabilities()
    options = {"extensions": " ".join(every)}   # bare names: exactly these, the off-by-default too
    for name in every:
        if name in registry.HARNESS_ONLY:
            with pytest.raises(SieveCompileError, match="unknown Sieve capability"):
                compile_text(f'require "{name}";', options=options)
            compile_text(f'require "{name}";', options={**options, "testsuite_harness": registry.HARNESS})
        else:
            ext = registry.load_extension(name)
            together = [name, *(ext.needs if ext is not None else ())]
            script = compile_text(f"require {together!r};".replace("'", '"'), options=options)
            assert name in script.requires
            if ext is not None and ext.needs:
                with pytest.raises(SieveCompileError, match="cannot be used without"):
                    compile_text(f'require "{name}";', options=options)
    for bogus in ("core", "vnd-dovecot-pipe", "vnd_dovecot_pipe", "comparator-i;octet2", "../core", "",
                  "Fileinto", "mailbox_names", "nonexistent"):
        assert bogus not in every
        with pytest.raises(SieveCompileError, match="unknown Sieve capability"):
            compile_text(f'require "{bogus}";', options=options)


def test_the_default_set_is_pigeonholes():
    assert registry.enabled_extensions() == {
        "body", "comparator-i;ascii-casemap", "comparator-i;ascii-numeric", "comparator-i;octet", "copy",
        "date", "duplicate", "encoded-character", "enotify", "envelope", "environment", "extracttext",
        "fileinto", "foreverypart", "ihave", "imap4flags", "include", "index", "mailbox", "mime", "regex",
        "reject", "relational", "subaddress", "vacation", "variables"}
    # "+name" and "-name" change it; bare names replace it.
    assert "editheader" in registry.enabled_extensions("+editheader")
    assert "fileinto" not in registry.enabled_extensions("-fileinto")
    assert registry.enabled_extensions("fileinto envelope") == {"fileinto", "envelope"} | registry.IMPLICIT


def test_implied_and_conflicting_capabilities_come_from_the_extension_modules():
    opts = {"extensions": "+spamtestplus +vnd.dovecot.environment +imapflags +notify"}
    script = compile_text('require ["spamtestplus", "vnd.dovecot.environment", "relational",'
                          ' "comparator-i;ascii-numeric"];\n'
                          'if allof(spamtest :percent :value "ge" :comparator "i;ascii-numeric" "50",'
                          ' environment "name" "x") { keep; }', options=opts)
    assert {"spamtest", "environment"} <= set(script.requires)
    with pytest.raises(SieveCompileError, match="imapflags extension cannot be used together"):
        compile_text('require ["imap4flags", "imapflags"];', options=opts)
    with pytest.raises(SieveCompileError, match="notify extension cannot be used together"):
        compile_text('require ["notify", "enotify"];', options=opts)


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) for every import in the file, at any depth (lazy imports count too)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out.extend((a.name, []) for a in node.names)
    return out


def _module_name(path: Path) -> str:
    rel = path.relative_to(SIEVE.parent.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sieve_modules() -> dict[str, Path]:
    return {_module_name(p): p for p in SIEVE.rglob("*.py")}


def test_no_module_imports_another_modules_private_names():
    modules = _sieve_modules()
    bad = []
    for name, path in modules.items():
        for module, names in _imports(path):
            if not module.startswith("fetchdeliver"):
                continue
            for n in names:
                if n.startswith("_") and not n.startswith("__"):
                    bad.append(f"{name}: from {module} import {n}")
    assert not bad


def test_the_engine_import_graph_has_no_cycles():
    modules = _sieve_modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps = set()
        for module, names in _imports(path):
            if module == "fetchdeliver.sieve":
                # "from fetchdeliver.sieve import core" names a submodule; the package itself otherwise.
                deps.update(f"{module}.{n}" if f"{module}.{n}" in modules else module for n in names)
            elif module in modules:
                deps.add(module)
        deps.discard(name)
        graph[name] = deps
    # runtime and registry are the bottom of the engine: nothing of the engine but its errors.
    assert graph["fetchdeliver.sieve.runtime"] <= {"fetchdeliver.sieve.errors"}
    assert graph["fetchdeliver.sieve.registry"] == set()
    assert not any(d.startswith("fetchdeliver.sieve.extensions.") for d in graph["fetchdeliver.sieve.core"])
    assert not any(d.startswith("fetchdeliver.sieve.extensions.")
                   for d in graph["fetchdeliver.sieve.interpreter"])
    assert "fetchdeliver.sieve.interpreter" not in graph["fetchdeliver.sieve.core"]
    for name in graph:
        if name.startswith("fetchdeliver.sieve.extensions."):
            assert "fetchdeliver.sieve.interpreter" not in graph[name], name
            assert "fetchdeliver.sieve.core" not in graph[name], name
    # Among the engine's modules (the package's __init__ aside: it is the public facade, importing
    # its parts lazily), no cycle at all.
    engine = {n: {d for d in deps if d != "fetchdeliver.sieve"} for n, deps in graph.items()
              if n != "fetchdeliver.sieve"}
    state: dict[str, int] = {}

    def visit(n: str, stack: list[str]) -> None:
        state[n] = 1
        for d in sorted(engine.get(n, ())):
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(d):] + [n, d]))
            if d not in state:
                visit(d, stack + [n])
        state[n] = 2

    for n in sorted(engine):
        if n not in state:
            visit(n, [])
