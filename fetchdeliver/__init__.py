"""fetchdeliver: fetch, filter with Sieve, deliver and serve mail.

Kept import-free on purpose: the MDA runs once per message, so every module is
imported lazily by the command that needs it.
"""

__version__ = "0.1.0"
