"""One mail store under every face: the interface (base.py) and its backends (maildir.py, mbox.py).

Kept import-free: the MDA imports `fetchdeliver.storage.maildir` on every delivery.
"""
