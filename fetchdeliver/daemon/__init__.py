"""The long-running daemon: polling, IMAP IDLE push, LMTP, IMAP server, spool directory, watches."""
