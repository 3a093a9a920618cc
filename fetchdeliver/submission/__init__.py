"""The message submission agent (RFC 6409): the users' own mail clients send through it.

    settings.py   the [submission] table
    sasl.py       AUTH mechanisms (PLAIN, LOGIN) over the IMAP server's Authenticator
    identity.py   which addresses a logged-in user may send as; the per-user rate limit
    headers.py    the header checks and additions (From:, Date, Message-ID, Received)
    dispatch.py   what happens to an accepted message: queue, local delivery, Sent copy
    sent.py       the one function that writes the Sent copy (re-point it to a new store here)
    server.py     the aiosmtpd session and listeners
    command.py    `fetchdeliver submission`
"""
