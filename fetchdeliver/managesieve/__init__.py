"""The ManageSieve server (RFC 5804): users upload, check and activate their Sieve scripts.

Scripts are stored in Pigeonhole's layout (storage.py); logins are the IMAP
server's (fetchdeliver.imapserver.auth); the active script is what delivery runs
for that user when a recipient's `rules` points at its `.dovecot.sieve` link.
"""
