"""The IMAP server: protocol, sessions, storage backends, authentication."""
