"""Exceptions with messages a user can act on, and the sysexits codes they map to."""

# sysexits.h
EX_OK = 0
EX_USAGE = 64
EX_DATAERR = 65
EX_NOINPUT = 66
EX_NOUSER = 67
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_OSERR = 71
EX_CANTCREAT = 73
EX_IOERR = 74
EX_TEMPFAIL = 75
EX_NOPERM = 77
EX_CONFIG = 78


class FetchdeliverError(Exception):
    """Base class of every error the project raises on purpose."""


class ConfigError(FetchdeliverError):
    """A configuration problem; the message names the file and the key."""

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None):
        self.file = file
        self.key = key
        where = ""
        if file and key:
            where = f"{file}: {key}: "
        elif file:
            where = f"{file}: "
        elif key:
            where = f"{key}: "
        super().__init__(where + message)
        self.detail = message


class UsageError(FetchdeliverError):
    """Bad command-line arguments; the message says which (exit 64, EX_USAGE)."""


class DeliveryError(FetchdeliverError):
    """A delivery did not happen. `temporary` says whether a retry may succeed."""

    temporary = True


class TemporaryDeliveryError(DeliveryError):
    """Disk full, lock timeout, unwritable folder, program said EX_TEMPFAIL: retry later."""

    temporary = True


class PermanentDeliveryError(DeliveryError):
    """Retrying will not help (e.g. a program that exits with a permanent failure)."""

    temporary = False


class InvalidMailboxName(PermanentDeliveryError):
    """A folder name that would escape the mail root or cannot be stored."""


class MailboxNotFound(PermanentDeliveryError):
    """Delivery without :create to a mailbox that does not exist."""


class FilterUnavailable(TemporaryDeliveryError):
    """A content filter (spamd, rspamd, clamd) is down, slow or answered something we cannot read."""


class QuotaExceeded(DeliveryError):
    """Storing the message would take its user over quota (storage/quota.py). Whether that is
    temporary (LMTP 452 4.2.2, MDA exit 75) or final (552 5.2.2, exit 77) is `[quota] tempfail`;
    `resource` is the IMAP quota resource (RFC 9208) that ran out: "STORAGE" or "MESSAGE"."""

    imap_code = "OVERQUOTA"

    def __init__(self, message: str, *, resource: str = "STORAGE", temporary: bool = False) -> None:
        super().__init__(message)
        self.resource = resource
        self.temporary = temporary
