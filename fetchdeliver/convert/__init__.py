"""Converters for people moving in: procmailrc -> Sieve, fetchmailrc / getmailrc -> [[account]] TOML."""
