"""Moved to fetchdeliver.sources.accounts (schema, Account), .credentials (secrets, OAuth2) and .tls (pins).

A thin re-export for code written against the old path (branches in flight, plugins); new code
imports from fetchdeliver.sources.
"""

from fetchdeliver.sources.accounts import (KEYS, REQUIRED, Account, OAuth2Flow, SecretError, TLSPinError,  # noqa: F401
                                           check_accounts, from_settings, oauthbearer_string, spki_der,
                                           xoauth2_string)
