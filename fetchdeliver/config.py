"""TOML configuration -> validated settings. Every error names the file, the key and the problem.

The schema is data: each table lists its keys with a type and a checker, so an
unknown key is an error (not silence) and later features add tables by adding
entries to `TABLES` / `ARRAY_TABLES`. The parsed, validated result is a plain
dict; `load()` caches it with `marshal` keyed by the file's path, size and
mtime, because `tomllib` alone costs the MDA ~10 ms per message.
"""

from __future__ import annotations

import os

from fetchdeliver.errors import ConfigError

CACHE_FORMAT = 3


def default_config_path() -> str:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "fetchdeliver", "config.toml")


def default_state_dir() -> str:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "fetchdeliver")


def default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "fetchdeliver")


# ---------------------------------------------------------------------------
# Key checkers: each takes (value, where) and returns the normalised value or
# raises ValueError with a message that completes "KEY: ...".

def check_str(v, where):
    if not isinstance(v, str):
        raise ValueError(f"expected a string, got {type(v).__name__} {v!r}")
    return v


def check_nonempty_str(v, where):
    v = check_str(v, where)
    if not v.strip():
        raise ValueError("must not be empty")
    return v


def check_host(v, where):
    """A host name or address (a server to connect to, an EHLO name): no spaces, no slash."""
    v = check_nonempty_str(v, where)
    if any(c.isspace() for c in v) or "/" in v:
        raise ValueError(f"not a host name or address: {v!r}")
    return v


def plugin_ref(v, where):
    """A `package.module:callable` reference (the `backend` key of the servers' tables)."""
    v = check_nonempty_str(v, where)
    mod, sep, attr = v.partition(":")
    if not sep or not mod or not attr:
        raise ValueError(f"expected \"package.module:callable\", got {v!r}")
    return v


def listen_addresses(v, where) -> list[str]:
    """"HOST:PORT" or a list of them ("" entries are dropped) -> the list (the servers' `listen` keys)."""
    from fetchdeliver.recipients import parse_listen

    items = [v] if isinstance(v, str) else v
    if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
        raise ValueError(f"expected \"HOST:PORT\" or a list of them, got {v!r}")
    out = []
    for x in items:
        if x.strip():
            parse_listen(x)
            if not x.strip().rpartition(":")[0].strip("[]"):
                raise ValueError(f"{x!r} has no host (use 0.0.0.0 or :: for every address)")
            out.append(x.strip())
    return out


def check_path(v, where):
    v = check_nonempty_str(v, where)
    if "\0" in v:
        raise ValueError("a path cannot contain a NUL byte")
    path = os.path.expandvars(os.path.expanduser(v))
    if not os.path.isabs(path):
        # Relative paths are relative to the config file, as users expect.
        path = os.path.normpath(os.path.join(os.path.dirname(where), path))
    return path


def check_bool(v, where):
    if not isinstance(v, bool):
        raise ValueError(f"expected true or false, got {v!r}")
    return v


def check_int(lo=None, hi=None):
    def check(v, where):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"expected an integer, got {v!r}")
        if lo is not None and v < lo or hi is not None and v > hi:
            raise ValueError(f"must be between {lo} and {hi}, got {v}")
        return v
    return check


def check_number(lo=None):
    def check(v, where):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"expected a number, got {v!r}")
        if lo is not None and v < lo:
            raise ValueError(f"must be at least {lo}, got {v}")
        return float(v)
    return check


def check_choice(*choices):
    def check(v, where):
        v = check_str(v, where)
        if v not in choices:
            raise ValueError(f"must be one of {', '.join(repr(c) for c in choices)}, got {v!r}")
        return v
    return check


def check_str_list(v, where):
    if isinstance(v, str):
        return [v]
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ValueError(f"expected a list of strings, got {v!r}")
    return list(v)


def check_str_table(v, where):
    if not isinstance(v, dict) or not all(isinstance(x, str) for x in v.values()):
        raise ValueError(f"expected a table of strings, e.g. {{ \"1\" = \"Clean\" }}, got {v!r}")
    return dict(v)


def check_size(v, where):
    """A byte count: an integer, or a string such as "512K", "1M", "2G"."""
    if isinstance(v, bool):
        raise ValueError(f"expected a size such as \"1M\", got {v!r}")
    if isinstance(v, int):
        if v < 0:
            raise ValueError(f"must not be negative, got {v}")
        return v
    text = check_str(v, where).strip()
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    unit = units.get(text[-1:].lower(), 1)
    digits = text[:-1] if unit != 1 else text
    if not digits.isdigit() or not digits.isascii():
        raise ValueError(f"not a size: {text!r} (use e.g. 1048576, 512K, 1M)")
    return int(digits) * unit


def parse_duration(text: str) -> int:
    """'90s', '5m', '2h', '1d', '1h30m' or a plain number of seconds -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    s = text.strip().lower()
    if not s:
        raise ValueError("an empty duration (use e.g. 30s, 5m, 2h, 1d)")
    if s.isdigit():
        return int(s)
    total, num = 0, ""
    for ch in s:
        if ch.isdigit():
            num += ch
        elif ch in units and num:
            total += int(num) * units[ch]
            num = ""
        else:
            raise ValueError(f"not a duration: {text!r} (use e.g. 30s, 5m, 2h, 1d)")
    if num:
        raise ValueError(f"not a duration: {text!r} (a unit s/m/h/d/w must follow {num})")
    return total


def check_duration(v, where):
    if isinstance(v, bool):
        raise ValueError(f"expected a duration such as \"5m\", got {v!r}")
    if isinstance(v, int):
        return v
    return parse_duration(check_str(v, where))


# The checkers' old private names, for the feature branches merged after the rename (sieve/,
# imapserver/ and accounts.py still use them). tests/unit/test_layout.py rejects new uses.
_str, _nonempty_str, _path, _bool = check_str, check_nonempty_str, check_path, check_bool
_int, _number, _choice, _size, _duration = check_int, check_number, check_choice, check_size, check_duration
_str_list, _str_table = check_str_list, check_str_table


# ---------------------------------------------------------------------------
# The schema. A table is {key: checker}; validators for whole tables (cross-key
# rules) are in TABLE_RULES.

DELIVERY_KEYS = {
    "maildir": check_path,
    "mbox": check_path,
    "mbox_folders": check_path,
    "rules": check_path,
    "state_dir": check_path,
    "cache_dir": check_path,
    "fsync": check_bool,
    "lock_timeout": check_number(lo=0),
    "default_mailbox": check_nonempty_str,
}

SIEVE_KEYS = {
    "extensions": check_str_list,          # e.g. ["+editheader", "-enotify"] as Pigeonhole's sieve_extensions
    "pipe_bin_dir": check_path,            # vnd.dovecot.pipe/filter/execute programs (sieve_pipe_bin_dir)
    "personal_dir": check_path,            # include :personal
    "global_dir": check_path,              # include :global
    "spamtest_header": check_nonempty_str,
    "spamtest_max": check_number(),
    "virustest_header": check_nonempty_str,
    "spamtest_type": check_choice("score", "strlen", "text"),   # how the header reads (Pigeonhole's status_type)
    "virustest_type": check_choice("score", "strlen", "text"),
    "spamtest_max_header": check_nonempty_str,                  # "NAME: REGEX" giving the maximum score
    "virustest_max": check_number(),
    "virustest_max_header": check_nonempty_str,
    "spamtest_text_values": check_str_table,                    # {"0" = "Clean", ..., "10" = "Spam"} for "text"
    "virustest_text_values": check_str_table,
    "vacation_min_period": check_duration,
    "vacation_max_period": check_duration,
    "vacation_default_period": check_duration,
    "vacation_default_subject": check_nonempty_str,             # reply subject without :subject
    "vacation_default_subject_template": check_nonempty_str,    # ... when the message has one: "Re: %$"
    "max_redirects": check_int(0, 1000),
    # Limits on hostile scripts and mail (Pigeonhole's sieve_max_* names and defaults where it has them)
    "max_run_time": check_duration,                             # CPU time per message's run (default 5s; 0: none)
    "max_script_size": check_size,                              # bytes, "1M" (default 1M; 0: none)
    "max_block_nesting": check_int(1, 100),                     # default 32
    "max_test_nesting": check_int(1, 100),                      # default 32
    "max_actions": check_int(0, 10000),                         # default 32 (0: none)
    "pipe_timeout": check_duration,                             # vnd.dovecot.* programs are killed after this
    "environment": check_str_table,                             # extra items for the environment extension
    "special_use": check_str_table,                             # special-use: {"\\Junk" = "Spam"} (RFC 8579)
    "mailbox_ids": check_str_table,                             # mailboxid: {"F2212" = "Work"} (RFC 9042)
    "lists": check_str_table,                                   # extlists: {"name" = "/path/file"} (RFC 6134)
    "addressbook": check_path,                                  # extlists: the ":addrbook:default" list
    "report_from": check_nonempty_str,                          # vnd.dovecot.report: From of reports
    "user_email": check_nonempty_str,                           # the user's address (report_from = "user_email")
    "vacation_use_original_recipient": check_bool,              # original recipient counts as the user's (default false)
    "vacation_dont_check_recipient": check_bool,                # reply whatever To/Cc say (default false)
    "vacation_max_subject_codepoints": check_int(0, 100000),    # longer reply subjects are cut with "…" (default 256)
    "vacation_to_header_ignore_envelope": check_bool,           # reply to the Sender/From header, not the envelope
    "vacation_send_from_recipient": check_bool,                 # reply's envelope sender: the recipient, not <>
    "redirect_envelope_from": check_nonempty_str,
    "notify_mailto_envelope_from": check_nonempty_str,          # postmaster (default), sender, recipient, ...               # sender (default), recipient, orig_recipient, user_email, <addr>
    "editheader_protected": check_str_list,                     # header names editheader may not add/delete
    "editheader_forbid_add": check_str_list,
    "editheader_forbid_delete": check_str_list,
    "editheader_max_header_size": check_size,                   # bytes of an added header value (default 2048)
    "variables_max_variable_size": check_size,                  # bytes a variable holds (default 4096)
    "variables_max_scope_size": check_int(1, 100000),           # variables one script may use (default 255)
    "include_max_includes": check_int(1, 10000),                # scripts one script may include (default 255)
    "include_max_nesting_depth": check_int(1, 100),             # include nesting (default 10)
    "execute_input_eol": check_choice("crlf", "lf"),            # line ends of vnd.dovecot.execute's input
}

LOG_KEYS = {
    "keep": check_duration,                # how long the delivery log keeps a row (default 30d)
    "deliveries": check_bool,              # write the delivery log at all (default true)
    "mda": check_bool,                     # also from `fetchdeliver deliver` (default false: it costs start-up)
}

TABLES: dict[str, dict] = {
    "delivery": DELIVERY_KEYS,
    "sieve": SIEVE_KEYS,
    "log": LOG_KEYS,
}

# [[name]] arrays of tables: name -> (keys, required keys). Later features
# register theirs here (accounts, recipients).
ARRAY_TABLES: dict[str, tuple[dict, tuple[str, ...]]] = {}


def _check_delivery(table: dict, file: str) -> None:
    if "maildir" in table and "mbox" in table:
        raise ConfigError("set either maildir or mbox, not both", file=file, key="delivery.mbox")
    if "mbox_folders" in table and "mbox" not in table:
        raise ConfigError("mbox_folders needs mbox", file=file, key="delivery.mbox_folders")


TABLE_RULES = {"delivery": _check_delivery}


def register_array_table(name: str, keys: dict, required: tuple[str, ...] = (), rule=None) -> None:
    """Let a feature module add a [[name]] table to the schema."""
    ARRAY_TABLES[name] = (keys, required)
    if rule is not None:
        TABLE_RULES[name] = rule


def register_table(name: str, keys: dict, rule=None) -> None:
    """Let a feature module add a [name] table to the schema."""
    TABLES[name] = keys
    if rule is not None:
        TABLE_RULES[name] = rule


# Rules across tables (a key of one naming an entry of another): rule(document, file), after TABLE_RULES.
DOCUMENT_RULES: list = []


def register_document_rule(rule) -> None:
    """Let a feature module check references between tables; the rule raises ConfigError."""
    if rule not in DOCUMENT_RULES:
        DOCUMENT_RULES.append(rule)


def _load_feature_schemas() -> None:
    # Importing these modules registers their tables. Only done on a cache miss.
    import importlib

    for mod in ("fetchdeliver.sources.accounts", "fetchdeliver.recipients", "fetchdeliver.outbound.settings",
                "fetchdeliver.imapserver.settings", "fetchdeliver.daemon.settings",
                "fetchdeliver.managesieve.settings", "fetchdeliver.web.settings",
                "fetchdeliver.pop3server.settings", "fetchdeliver.submission.settings",
                "fetchdeliver.storage.settings", "fetchdeliver.filter.settings"):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise


def _validate_table(name: str, raw: dict, keys: dict, file: str, errors: list[ConfigError],
                    prefix: str) -> dict:
    out = {}
    for key, value in raw.items():
        full = f"{prefix}.{key}"
        checker = keys.get(key)
        if checker is None:
            known = ", ".join(sorted(keys))
            errors.append(ConfigError(f"unknown key (known keys: {known})", file=file, key=full))
            continue
        try:
            out[key] = checker(value, file)
        except ValueError as e:
            errors.append(ConfigError(str(e), file=file, key=full))
    return out


def validate(data: dict, file: str) -> dict:
    """Check a parsed TOML document against the schema; raise one ConfigError listing every problem."""
    _load_feature_schemas()
    errors: list[ConfigError] = []
    out: dict = {}
    for name, value in data.items():
        if name in TABLES:
            if not isinstance(value, dict):
                errors.append(ConfigError(f"expected a table [{name}]", file=file, key=name))
                continue
            out[name] = _validate_table(name, value, TABLES[name], file, errors, name)
        elif name in ARRAY_TABLES:
            keys, required = ARRAY_TABLES[name]
            if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
                errors.append(ConfigError(f"expected an array of tables [[{name}]]", file=file, key=name))
                continue
            items = []
            for i, item in enumerate(value):
                label = f"{name}[{i}]"
                if isinstance(item.get("name"), str):
                    label = f"{name}[{i}] ({item['name']})"
                before = len(errors)
                checked = _validate_table(name, item, keys, file, errors, label)
                for req in required:
                    if req not in item:
                        errors.append(ConfigError("missing required key", file=file, key=f"{label}.{req}"))
                if len(errors) == before:
                    items.append(checked)
            out[name] = items
        else:
            known = ", ".join(sorted([f"[{t}]" for t in TABLES] + [f"[[{t}]]" for t in ARRAY_TABLES]))
            errors.append(ConfigError(f"unknown table or key (known: {known})", file=file, key=name))
    if not errors:
        for name, rule in TABLE_RULES.items():
            if name in out:
                try:
                    rule(out[name], file)
                except ConfigError as e:
                    errors.append(e)
    if not errors:
        for document_rule in DOCUMENT_RULES:
            try:
                document_rule(out, file)
            except ConfigError as e:
                errors.append(e)
    if errors:
        raise ConfigErrors(errors)
    return out


class ConfigErrors(ConfigError):
    """Several configuration errors at once; str() is one line per error."""

    def __init__(self, errors: list[ConfigError]):
        self.errors = errors
        Exception.__init__(self, "\n".join(str(e) for e in errors))
        self.file = errors[0].file if errors else None
        self.key = errors[0].key if errors else None
        self.detail = str(self)


def parse_file(path: str) -> dict:
    """Read and validate a config file without any cache."""
    import tomllib

    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError("config file not found", file=path) from None
    except OSError as e:
        raise ConfigError(f"cannot read config file: {e.strerror}", file=path) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"not valid TOML: {e}", file=path) from None
    return validate(data, path)


def load(path: str, *, cache: bool = True) -> dict:
    """The validated config as a dict, from a marshal cache when the file is unchanged."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ConfigError("config file not found", file=path) from None
    except OSError as e:
        raise ConfigError(f"cannot read config file: {e.strerror}", file=path) from None
    if not cache:
        return parse_file(path)
    import marshal

    real = os.path.realpath(path)
    stamp = (CACHE_FORMAT, real, st.st_size, st.st_mtime_ns, st.st_ino)
    cache_file = os.path.join(default_cache_dir(), "config",
                              real.strip("/").replace("/", "%") + ".marshal")
    try:
        with open(cache_file, "rb") as f:
            cached_stamp, data = marshal.load(f)
        if tuple(cached_stamp) == stamp:
            return data
    except (OSError, EOFError, ValueError, TypeError):
        pass
    data = parse_file(path)
    try:
        os.makedirs(os.path.dirname(cache_file), exist_ok=True)
        tmp = f"{cache_file}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            marshal.dump((stamp, data), f)
        os.replace(tmp, cache_file)
    except OSError:
        pass  # a cache we cannot write only costs time
    return data


class Settings:
    """Convenience view over a validated config dict, with the defaults applied."""

    __slots__ = ("data", "file")

    def __init__(self, data: dict | None = None, file: str | None = None) -> None:
        self.data = data or {}
        self.file = file

    @property
    def delivery(self) -> dict:
        return self.data.get("delivery", {})

    @property
    def sieve(self) -> dict:
        return self.data.get("sieve", {})

    @property
    def state_dir(self) -> str:
        return self.delivery.get("state_dir") or default_state_dir()

    @property
    def cache_dir(self) -> str:
        return self.delivery.get("cache_dir") or default_cache_dir()

    def table(self, name: str):
        return self.data.get(name)


def load_settings(path: str | None, *, required: bool = True, tables: tuple[str, ...] = (),
                  cache: bool = True) -> Settings:
    """The one way a command reads its config file: the file given with -c/--config (`path`), else
    the default one ($XDG_CONFIG_HOME/fetchdeliver/config.toml).

    required=False: a missing *default* file gives empty settings (with `file` None); a file named
    with -c must always exist. `tables`: modules to import first because they register the tables
    the command reads (the feature tables of config.py are registered anyway). cache=False reads
    the file itself, not the marshal cache (`config check`).
    Raises ConfigError (ConfigErrors when there are several) naming the file and the key."""
    file = path or default_config_path()
    if tables:
        import importlib

        for mod in tables:
            importlib.import_module(mod)
    if path is None and not required and not os.path.exists(file):
        return Settings({}, None)
    return Settings(load(file, cache=cache), file)


def config_error_lines(e: ConfigError) -> list[str]:
    """One line per problem ("FILE: KEY: what"), however many a ConfigErrors holds."""
    errors = e.errors if isinstance(e, ConfigErrors) else [e]
    return [line for err in errors for line in str(err).splitlines()]


def report_config_error(prefix: str, e: ConfigError) -> int:
    """Print a config error on stderr as "PREFIX: FILE: KEY: what", one line per problem, and
    return EX_CONFIG (78): what every command does with a ConfigError."""
    import sys

    from fetchdeliver.errors import EX_CONFIG

    for line in config_error_lines(e):
        sys.stderr.write(f"{prefix}: {line}\n")
    return EX_CONFIG
