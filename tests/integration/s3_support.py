"""A real S3-compatible server for the tests: moto in server mode on an ephemeral 127.0.0.1 port,
stopped by its PID. Credentials are dummies; nothing leaves 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from dovecot import free_ports


class MotoServer:
    def __init__(self) -> None:
        exe = os.path.join(os.path.dirname(sys.executable), "moto_server")
        if not os.path.exists(exe):
            exe = shutil.which("moto_server")
        if exe is None:
            raise RuntimeError("moto's server is not installed (pip install 'moto[server]')")
        self.exe = exe
        self.port = free_ports(1)[0]
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "MotoServer":
        self.proc = subprocess.Popen([self.exe, "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 1).close()
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)


@pytest.fixture
def s3_server(monkeypatch):
    """A fresh moto server; AWS_* variables point boto3 (in this process and its children) at it."""
    pytest.importorskip("boto3", reason="boto3 is not installed (pip install '.[postgres]')")
    try:
        srv = MotoServer().start()
    except RuntimeError as e:
        pytest.skip(str(e))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", srv.endpoint)
    try:
        yield srv
    finally:
        srv.stop()
