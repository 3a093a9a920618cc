"""`vnd.dovecot.testsuite`: the commands and tests of Pigeonhole's testsuite language.

Enabled only by the harness (registry.HARNESS_ONLY; found through registry.OUTSIDE): a script in normal
delivery cannot require it. Every handler works on the Harness object the
harness puts in ``ctx.ext_state["testsuite"]``; the run-time behaviour lives in
fetchdeliver.sieve.testsuite.harness.
"""

from __future__ import annotations

from fetchdeliver.sieve.registry import Extension

EXT = Extension("vnd.dovecot.testsuite")
EXT.namespace("tst")  # ${tst.path}

OBJECTS = ("message", "envelope.from", "envelope.to", "envelope.orig_to", "envelope.auth")


def _h(ctx):
    return ctx.ext_state["testsuite"]


@EXT.command("test", args=("string",), block=True)
def test(ctx, node) -> None:
    # A nested test is refused when it runs (Harness.run_test: "already inside test block").
    _h(ctx).run_test(ctx, node)


@EXT.command("test_fail", args=("string",))
def test_fail(ctx, node) -> None:
    _h(ctx).fail(ctx.expand(node[3][0]))


def _check_set(v, node, out) -> None:
    name = out[3][0] if out[3] else ""
    if isinstance(name, str) and name.lower() not in OBJECTS:
        obj, _, member = name.partition(".")
        if obj.lower() in ("message", "envelope"):
            v.error(f"member '{member}' does not exist for testsuite object '{obj}'", node)
        else:
            v.error(f"unknown testsuite object '{obj}'", node)


@EXT.command("test_set", args=("string", "string"), check=_check_set)
def test_set(ctx, node) -> None:
    _h(ctx).set_object(ctx, node[3][0].lower(), ctx.expand(node[3][1]))


@EXT.command("test_config_set", args=("string", "string"))
def test_config_set(ctx, node) -> None:
    _h(ctx).config_set(ctx.expand(node[3][0]), ctx.expand(node[3][1]))


@EXT.command("test_config_unset", args=("string",))
def test_config_unset(ctx, node) -> None:
    _h(ctx).config_unset(ctx.expand(node[3][0]))


@EXT.command("test_config_reload", tags={"extension": "string"})
def test_config_reload(ctx, node) -> None:
    _h(ctx).config_reload(ctx, ctx.expand(node[2]["extension"]) if "extension" in node[2] else None)


def _check_message(v, node, out) -> None:
    tags = out[2]
    if ("smtp" in tags) == ("folder" in tags):
        v.error("exactly one of the ':smtp' or ':folder' tags must be specified for the test_message "
                "command", node)


_MESSAGE = dict(args=("number",), tags={"smtp": None, "folder": "string"}, check=_check_message)


@EXT.command("test_message", **_MESSAGE)
def test_message_command(ctx, node) -> None:
    h = _h(ctx)
    if not h.select_message(ctx, node):
        h.fail(h.message_missing(ctx, node))


@EXT.test("test_message", **_MESSAGE)
def test_message_test(ctx, node) -> bool:
    return _h(ctx).select_message(ctx, node)


@EXT.command("test_message_print")
def test_message_print(ctx, node) -> None:
    _h(ctx).print_message(ctx)


@EXT.command("test_mailbox_create", args=("string",))
def test_mailbox_create(ctx, node) -> None:
    _h(ctx).mailbox_create(ctx.expand(node[3][0]))


@EXT.command("test_mailbox_delete", args=("string",))
def test_mailbox_delete(ctx, node) -> None:
    _h(ctx).mailbox_delete(ctx.expand(node[3][0]))


@EXT.command("test_result_reset")
def test_result_reset(ctx, node) -> None:
    _h(ctx).command_result_reset(ctx)


@EXT.command("test_result_print")
def test_result_print(ctx, node) -> None:
    _h(ctx).result_print(ctx)


@EXT.command("test_binary_save", args=("string",))
def test_binary_save(ctx, node) -> None:
    _h(ctx).binary_save(ctx.expand(node[3][0]))


@EXT.command("test_binary_load", args=("string",))
def test_binary_load(ctx, node) -> None:
    _h(ctx).binary_load(ctx.expand(node[3][0]))


@EXT.command("test_imap_metadata_set", args=("string", "string"), tags={"mailbox": "string"})
def test_imap_metadata_set(ctx, node) -> None:
    tags = node[2]
    _h(ctx).metadata_set(ctx.expand(tags["mailbox"]) if "mailbox" in tags else None,
                         ctx.expand(node[3][0]), ctx.expand(node[3][1]))


# -- tests ----------------------------------------------------------------------

@EXT.test("test_script_compile", args=("string",))
def test_script_compile(ctx, node) -> bool:
    return _h(ctx).script_compile(ctx.expand(node[3][0]))


@EXT.test("test_script_run", tags={"append_result": None})
def test_script_run(ctx, node) -> bool:
    return _h(ctx).script_run(ctx, bool(node[2].get("append_result")))


@EXT.test("test_multiscript", args=("strings",))
def test_multiscript(ctx, node) -> bool:
    return _h(ctx).multiscript(ctx, ctx.expand_list(node[3][0]))


def _check_index(v, node, out) -> None:
    if "index" in out[2] and out[2].get("match") == "count":
        v.error("the :index tag cannot be combined with :count", node)


@EXT.test("test_error", args=("strings",), groups=("comparator", "match"), tags={"index": "number"},
          check=_check_index)
def test_error(ctx, node) -> bool:
    return _h(ctx).match_list(ctx, node, _h(ctx).errors)


@EXT.test("test_result_action", args=("strings",), groups=("comparator", "match"), tags={"index": "number"},
          check=_check_index)
def test_result_action(ctx, node) -> bool:
    return _h(ctx).match_list(ctx, node, _h(ctx).action_names(ctx))


@EXT.test("test_result_execute")
def test_result_execute(ctx, node) -> bool:
    return _h(ctx).result_execute(ctx)
