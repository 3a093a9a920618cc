"""RFC 5229: variables (set with modifiers, ${name} and ${N} match variables, the string test)."""

from __future__ import annotations

from fetchdeliver.sieve.matching import ascii_lower, match
from fetchdeliver.sieve.registry import Extension

EXT = Extension("variables")

MAX_VALUE = 4096        # Pigeonhole's sieve_variables_max_variable_size
MAX_MATCH = 32          # ${0}..${32}, as Pigeonhole (RFC 5229 3.2: at least ${0}..${9})

# modifier -> precedence (RFC 5229 section 4.1; Pigeonhole adds :quoteregex, :encodeurl)
MODIFIERS = {"lower": 40, "upper": 40, "lowerfirst": 30, "upperfirst": 30,
             "quotewildcard": 20, "quoteregex": 20, "encodeurl": 15, "length": 10}
MODIFIER_EXT = {"quoteregex": "regex", "encodeurl": "enotify"}

_IDSTART = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_IDCHAR = _IDSTART | set("0123456789")


MAX_NAME = 64             # Pigeonhole's EXT_VARIABLES_MAX_VARIABLE_NAME_LEN
MAX_ELEMENTS = 10         # and EXT_VARIABLES_MAX_NAMESPACE_ELEMENTS
MAX_SCOPE = 255           # sieve_variables_max_scope_size: variables one script may declare


def valid_identifier(name: str) -> bool:
    return 0 < len(name) <= MAX_NAME and name[0] in _IDSTART and all(c in _IDCHAR for c in name)


def valid_variable_name(name: str, allow_namespace: bool = True) -> bool:
    parts = name.split(".")
    if len(parts) > 1 and not allow_namespace or len(parts) > MAX_ELEMENTS:
        return False
    return all(valid_identifier(p) for p in parts)


def declare(v, name: str, where) -> None:
    """Count a variable the script uses; past [sieve] variables_max_scope_size one error (the
    first time only, as Pigeonhole)."""
    declared = v.scratch.setdefault("variables.declared", set())
    if name in declared:
        return
    try:
        limit = int(v.options.get("variables_max_scope_size") or MAX_SCOPE)
    except (TypeError, ValueError):
        limit = MAX_SCOPE
    if len(declared) >= limit:
        if not v.scratch.get("variables.overflow"):
            v.scratch["variables.overflow"] = True
            v.error(f"(implicit) declaration of new variable '{name}' exceeds the limit "
                    f"(max variables: {limit})", where)
        return
    declared.add(name)


def check_references(v, s: str, where) -> None:
    """Compile-time checks of the ${...} references in a string: match variables up to ${32},
    namespaces that an extension of the script declares; each variable counts as declared."""
    i = 0
    while True:
        j = s.find("${", i)
        if j < 0:
            return
        end = s.find("}", j + 2)
        if end < 0:
            return
        name = s[j + 2:end]
        if name.isdigit():
            if int(name) > MAX_MATCH:
                v.error(f"match value index {int(name)} out of range (max: {MAX_MATCH})", where)
        elif valid_variable_name(name):
            ns, dot, _ = name.partition(".")
            if not dot:
                declare(v, name.lower(), where)
            elif ns.lower() not in v.reg.namespaces:
                v.error(f"referring to variable in unknown namespace '{ns}'", where)
        else:
            i = j + 2
            continue
        i = end + 1


def _upper(s: str) -> str:
    return s.upper() if s.isascii() else "".join(c.upper() if c.isascii() else c for c in s)


def lookup(ctx, name: str) -> str | None:
    """The value of ${name}; None when `name` is not a variable reference at all."""
    if name.isdigit():
        idx = int(name)
        if idx > MAX_MATCH:
            return None
        vals = ctx.match_values
        return vals[idx] if idx < len(vals) else ""
    if not valid_variable_name(name):
        return None
    lname = name.lower()
    if "." in lname:
        ns, _, rest = lname.partition(".")
        if ns == "global" and "." not in rest:
            return ctx.global_vars.get(rest, "")
        if ns == "env":
            env = ctx.ext_state.get("environment")
            if env is None and "vnd.dovecot.environment" in ctx.requires:
                from fetchdeliver.sieve.extensions.vnd_dovecot_environment import variable as env
            if env is not None:
                return env(ctx, rest) or ""
        hook = ctx.ext_state.get("namespace." + ns)  # e.g. the testsuite's ${tst.path}
        if hook is not None:
            return hook(ctx, rest)
        return None  # unknown namespace: left as written
    if lname in ctx.ext_state.get("globals", ()):
        return ctx.global_vars.get(lname, "")
    return ctx.variables.get(lname, "")


@EXT.service("expand")
def expand(ctx, s: str) -> str:
    out = []
    i = 0
    n = len(s)
    while i < n:
        j = s.find("${", i)
        if j < 0:
            out.append(s[i:])
            break
        out.append(s[i:j])
        end = s.find("}", j + 2)
        if end < 0:
            out.append(s[j:])
            break
        value = lookup(ctx, s[j + 2:end])
        if value is None:
            out.append("${")
            i = j + 2
            continue
        out.append(value)
        i = end + 1
    return "".join(out)


def max_size(ctx) -> int:
    """The largest value a variable holds, in bytes ([sieve] variables_max_variable_size, as
    Pigeonhole's sieve_variables_max_variable_size; default 4096)."""
    try:
        return int(ctx.env.options.get("variables_max_variable_size", MAX_VALUE))
    except (TypeError, ValueError):
        return MAX_VALUE


def truncate(value: str, limit: int) -> str:
    """`value` cut to at most `limit` bytes of UTF-8, never inside a character."""
    if len(value) <= limit // 4 or (value.isascii() and len(value) <= limit):
        return value
    raw = value.encode("utf-8", "surrogatepass")
    if len(raw) <= limit:
        return value
    return raw[:limit].decode("utf-8", "ignore")


def assign(ctx, name: str, value: str) -> None:
    value = truncate(value, max_size(ctx))
    lname = name.lower()
    if lname.startswith("global."):
        ctx.global_vars[lname[7:]] = value
    elif lname in ctx.ext_state.get("globals", ()):
        ctx.global_vars[lname] = value
    else:
        ctx.variables[lname] = value


def get(ctx, name: str) -> str:
    return lookup(ctx, name) or ""


def encode_url(value: str, limit: int | None = None) -> str:
    """:encodeurl (RFC 5435 4.1): percent-encoded UTF-8; with `limit`, as many whole characters
    as fit in `limit` bytes (an escape is never cut, as in Pigeonhole)."""
    from urllib.parse import quote

    out = quote(value, safe="-._~")
    if limit is None or len(out) <= limit:
        return out
    size = 0
    pieces = []
    for c in value:
        enc = quote(c, safe="-._~")
        if size + len(enc) > limit:
            break
        pieces.append(enc)
        size += len(enc)
    return "".join(pieces)


def apply_modifiers(value: str, mods: list[str], limit: int | None = None) -> str:
    for m in sorted(mods, key=lambda m: -MODIFIERS[m]):
        if m == "lower":
            value = ascii_lower(value)
        elif m == "upper":
            value = _upper(value)
        elif m == "lowerfirst":
            value = ascii_lower(value[:1]) + value[1:]
        elif m == "upperfirst":
            value = _upper(value[:1]) + value[1:]
        elif m == "quotewildcard":
            value = "".join("\\" + c if c in "*?\\" else c for c in value)
        elif m == "quoteregex":
            value = "".join("\\" + c if c in "\\^$.[]|()?*+{}" else c for c in value)
        elif m == "encodeurl":
            value = encode_url(value, limit)
        elif m == "length":
            value = str(len(value))
    return value


def _check_set(v, node, out) -> None:
    tags = out[2]
    seen: dict[int, str] = {}
    for t in list(tags):
        if t in MODIFIERS:
            ext = MODIFIER_EXT.get(t)
            if ext and ext not in v.required:
                v.error(f"unknown tagged argument ':{t}' for the set command", node)
                continue
            prec = MODIFIERS[t]
            if prec in seen:
                v.error(f"modifiers :{seen[prec]} and :{t} of the set command have the same precedence",
                        node)
            seen[prec] = t
    if out[3]:
        check_assignable(v, out[3][0], node, "set")


def check_assignable(v, name: str, node, command: str) -> None:
    """Compile-time check of a variable a command assigns (set, extracttext, ...): a valid name,
    in no namespace but global (with include), never a match variable."""
    ns, dot, _ = name.partition(".")
    if not valid_variable_name(name):
        v.error(f"invalid variable name '{name}' for the {command} command", node)
    elif dot and ns.lower() not in v.reg.namespaces:
        v.error(f"invalid variable name '{name}' for the {command} command (unknown namespace)", node)
    elif dot and ns.lower() != "global":
        v.error(f"cannot assign to variable '{name}' in the {command} command", node)
    elif not dot:
        declare(v, name.lower(), node)


@EXT.command("set", args=("string", "string"), tags={m: None for m in MODIFIERS}, check=_check_set)
def set_(ctx, node) -> None:
    tags = node[2]
    name, value = node[3]
    value = ctx.expand(value)
    mods = [t for t in tags if t in MODIFIERS]
    if mods:
        value = apply_modifiers(value, mods, max_size(ctx))
    assign(ctx, name, value)
    ctx.note(f"set {name} = {value!r}")


@EXT.test("string", args=("strings", "strings"), groups=("comparator", "match"))
def string(ctx, node) -> bool:
    tags = node[2]
    values = ctx.expand_list(node[3][0])
    if tags.get("match") == "count":
        values = [v for v in values if v != ""]
    return match(ctx, tags, values, ctx.expand_list(node[3][1]))
