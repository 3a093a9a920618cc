"""vnd.dovecot.environment (Pigeonhole): more environment items and the ${env.NAME} variables.

Items: "vnd.dovecot.default-mailbox" (INBOX), "vnd.dovecot.username" (the user the
script runs for) and "vnd.dovecot.config.NAME" (Pigeonhole's sieve_env_NAME setting: in a
config file `environment = { "vnd.dovecot.config.NAME" = "value" }` in [sieve], or the
option env_NAME given by a program). With "variables", ${env.ITEM} reads any
environment item ("_" in the name stands for "-").
"""

from __future__ import annotations

from fetchdeliver.sieve.extensions.environment import item as env_item
from fetchdeliver.sieve.registry import Extension

# Requiring it makes "environment" available: its test comes along.
EXT = Extension("vnd.dovecot.environment", default=False, implies=("environment",))
EXT.namespace("env")  # ${env.NAME}


@EXT.service("environment:vnd.dovecot.")
def item(ctx, name: str) -> str | None:
    """A vnd.dovecot.* environment item, or None when `name` is not one (or the running script
    did not require this extension)."""
    if "vnd.dovecot.environment" not in ctx.requires:
        return None
    env = ctx.env
    if name == "vnd.dovecot.default-mailbox":
        return env.default_mailbox
    if name == "vnd.dovecot.username":
        user = env.options.get("username") or env.auth_user
        if not user:
            import getpass

            try:
                user = getpass.getuser()
            except (KeyError, OSError):
                user = ""
        return user
    if name.startswith("vnd.dovecot.config."):
        value = env.options.get("env_" + name[len("vnd.dovecot.config."):])
        return None if value is None else str(value)
    return None


def variable(ctx, name: str) -> str:
    """${env.NAME}: the environment item NAME ("_" for "-" outside the config part)."""
    head, sep, tail = name.partition("vnd.dovecot.config.")
    key = (head.replace("_", "-") + sep + tail) if sep else name.replace("_", "-")
    return env_item(ctx, key) or ""
