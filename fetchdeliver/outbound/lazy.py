"""A stand-in for the outbound queue that costs nothing until a rule sends mail.

For the MDA's start-up budget: `Context.outbound = LazyOutbound(settings)`
imports sqlite3, smtplib and the queue only when a redirect / vacation /
notify action actually runs. The queued mail is sent by the LMTP server's
runner or by `fetchdeliver queue flush` (e.g. from a systemd timer).
"""

from __future__ import annotations


class LazyOutbound:
    __slots__ = ("settings", "_queue")

    def __init__(self, settings) -> None:
        self.settings = settings
        self._queue = None

    def submit_action(self, action, message):
        if self._queue is None:
            from fetchdeliver.outbound.queue import OutboundQueue

            self._queue = OutboundQueue.from_settings(self.settings)
        return self._queue.submit_action(action, message)
