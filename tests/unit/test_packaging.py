"""The wheel ships every package, the Lark grammars and the examples."""

import os
import subprocess
import sys
import tomllib
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _declared_packages():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return set(tomllib.load(f)["tool"]["setuptools"]["packages"])


def test_every_package_folder_is_declared():
    found = set()
    for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, "fetchdeliver")):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        if "__init__.py" in filenames:
            rel = os.path.relpath(dirpath, ROOT).replace(os.sep, ".")
            found.add(rel)
    missing = found - _declared_packages()
    assert not missing, f"add these to [tool.setuptools] packages in pyproject.toml: {sorted(missing)}"


def test_wheel_contains_grammar_and_examples(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), ROOT], check=True, timeout=240)
    wheel = next(p for p in os.listdir(tmp_path) if p.endswith(".whl"))
    names = zipfile.ZipFile(tmp_path / wheel).namelist()
    assert "fetchdeliver/grammar/sieve.lark" in names
    assert "fetchdeliver/examples/rules.sieve" in names
    assert any(n.startswith("fetchdeliver/examples/messages/") and n.endswith(".eml") for n in names)
    assert "fetchdeliver/delivery/maildir.py" in names
    assert "fetchdeliver/py.typed" in names          # PEP 561: the package's annotations are for its users
    from fetchdeliver import __version__             # the version is written once, in fetchdeliver/__init__.py
    assert wheel.startswith(f"fetchdeliver-{__version__}-"), wheel
