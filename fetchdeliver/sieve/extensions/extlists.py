"""RFC 6134: externally stored lists (the `:list` match type, `valid_ext_list`, `redirect :list`).

Where the lists come from (`[sieve]` options):

- ``lists = { "NAME" = "/path/file" }``: a list per file;
- ``addressbook = "/path/file"``: the user's address book, the list ":addrbook:default"
  (also ":addrbook:personal" and "urn:ietf:params:sieve:addrbook:default").

Both files have the same plain format: one entry per line, ``#`` starts a comment,
blank lines are ignored; an entry "Display Name <addr@example.org>" stands for its
address. Entries are compared case-insensitively (ASCII). A file that cannot be
read makes the list unknown: `valid_ext_list` is false and `:list` matches nothing.
"""

from __future__ import annotations

from fetchdeliver.sieve.registry import Extension

EXT = Extension("extlists", default=False)
EXT.group_tag("match", "list")
EXT.tag("redirect", "list")

ADDRBOOK_NAMES = (":addrbook:default", ":addrbook:personal", "urn:ietf:params:sieve:addrbook:default",
                  "urn:ietf:params:sieve:addrbook:personal")


def _path(ctx, name: str) -> str | None:
    opts = ctx.env.options
    lists = opts.get("lists") or {}
    if name in lists:
        return str(lists[name])
    if name.lower() in ADDRBOOK_NAMES and opts.get("addressbook"):
        return str(opts["addressbook"])
    return None


def parse_entries(text: str) -> list[str]:
    """The entries of a list file (see the module docstring)."""
    out: list[str] = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if line.endswith(">") and "<" in line:
            line = line[line.rindex("<") + 1:-1].strip()
        if line:
            out.append(line)
    return out


def entries(ctx, name: str) -> set[str] | None:
    """The list's entries folded for comparison, or None when the list does not exist."""
    cache = ctx.ext_state.setdefault("extlists", {})
    if name in cache:
        return cache[name]
    path = _path(ctx, name)
    found = None
    if path is not None:
        import os

        try:
            with open(os.path.expanduser(path), encoding="utf-8", errors="replace") as f:
                found = {e.lower() for e in parse_entries(f.read())}
        except OSError:
            found = None
    cache[name] = found
    return found


@EXT.match_type("list")
def match_list(ctx, cmp, value: str, key: str, tags) -> bool:
    members = entries(ctx, key)
    return members is not None and value.strip().lower() in members


@EXT.test("valid_ext_list", args=("strings",))
def valid_ext_list(ctx, node) -> bool:
    return all(entries(ctx, name) is not None for name in ctx.expand_list(node[3][0]))


@EXT.service("redirect_list")
def redirect_list(ctx, name: str, copy: bool) -> None:
    """redirect :list NAME: one redirect per member of the list (RFC 6134 section 2.5)."""
    from fetchdeliver.sieve.addresses import valid_address

    members = entries(ctx, name)
    if members is None:
        ctx.fail(f"redirect :list: unknown list '{name}'")
    for address in sorted(members):
        if valid_address(address):
            ctx.fail(f"redirect :list: list '{name}' holds an invalid address '{address}'")
        ctx.redirect(address, copy)
