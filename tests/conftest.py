import os
import shutil
import sys

import pytest
from hypothesis import settings

# CI runs the property tests on the same examples every time: a red run is a finding to reproduce, never
# luck. Locally they explore afresh (and FD_FUZZ_EXAMPLES=N runs longer hunts where a test reads it).
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def fetchdeliver_cmd():
    """The installed `fetchdeliver` console script of this interpreter's environment."""
    exe = os.path.join(os.path.dirname(sys.executable), "fetchdeliver")
    if os.path.exists(exe):
        return [exe]
    return [sys.executable, "-m", "fetchdeliver"]


@pytest.fixture(autouse=True)
def _isolated_xdg(tmp_path, monkeypatch):
    """Keep every test's config, cache and state out of the real home directory."""
    for var in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME"):
        monkeypatch.setenv(var, str(tmp_path / "xdg" / var.lower()))
    yield


def have(tool: str) -> bool:
    return shutil.which(tool) is not None
