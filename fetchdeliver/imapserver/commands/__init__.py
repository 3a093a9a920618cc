"""The IMAP commands, one module per state they belong to, each registered in `registry.REGISTRY`.

Importing this package registers every command: `any_state` (CAPABILITY, NOOP, LOGOUT, ID, ENABLE,
COMPRESS), `not_authenticated` (STARTTLS, LOGIN, AUTHENTICATE), `authenticated` (SELECT/EXAMINE, CREATE,
DELETE, RENAME, (UN)SUBSCRIBE, LSUB, NAMESPACE, STATUS, IDLE), `append` (APPEND: MULTIAPPEND, CATENATE,
APPENDLIMIT), `list_extended` (LIST: LIST-EXTENDED) and `selected` (CHECK, CLOSE, UNSELECT, EXPUNGE, FETCH,
STORE, COPY, MOVE, SEARCH, SORT, THREAD, CANCELUPDATE); `quota` (GETQUOTA, GETQUOTAROOT, SETQUOTA);
`metadata` (GETMETADATA, SETMETADATA); `notify` (NOTIFY). An extension adds a
module here and
imports it below; see docs/extending.md "Adding an IMAP command/extension".
"""

from __future__ import annotations

from fetchdeliver.imapserver.commands import any_state, authenticated, not_authenticated, selected  # noqa: F401
from fetchdeliver.imapserver.commands import append, list_extended  # noqa: F401  (APPEND, LIST and extensions)
from fetchdeliver.imapserver.commands import quota  # noqa: F401  (RFC 9208)
from fetchdeliver.imapserver.commands import metadata  # noqa: F401  (RFC 5464)
from fetchdeliver.imapserver.commands import notify  # noqa: F401  (RFC 5465)
from fetchdeliver.imapserver.commands.registry import REGISTRY, Command, capabilities

__all__ = ["REGISTRY", "Command", "capabilities"]
