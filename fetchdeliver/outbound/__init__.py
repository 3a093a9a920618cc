"""Outbound mail: the persistent SMTP queue, relay and MX delivery."""
