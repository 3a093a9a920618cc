"""The web page: the running daemon's accounts, deliveries, queue and Sieve rules in a browser.

Starlette (ASGI) served by uvicorn inside the daemon's event loop, Jinja2
templates rendered on the server, a signed session cookie (itsdangerous).
Nothing here is imported on the delivery path; see docs/web.md.
"""
