"""docs/getting-started.md, followed word for word in a fresh HOME (issue 21, item 8).

Every ```sh block runs in order with bash -e, in an empty home directory, with no XDG variables.
Two kinds of block are stood in for or left out, each marked in the document by an HTML comment:
`<!-- test: install -->` (the pip install: this test links the already installed `fetchdeliver`
where the document installs it, and checks the document's PATH line is the one used here) and
`<!-- test: needs a mail server -->`.
"""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOC = os.path.join(ROOT, "docs", "getting-started.md")
PATH_LINE = 'export PATH="$HOME/.local/fetchdeliver/bin:$PATH"'


def blocks(text: str) -> list[tuple[str | None, str]]:
    """(marker or None, code) for each ```sh block, in order."""
    out = []
    for m in re.finditer(r"(?:<!-- test: ([^>]*?) -->\n)?```sh\n(.*?)```", text, re.S):
        out.append((m.group(1), m.group(2)))
    return out


def test_getting_started_runs_word_for_word_in_a_fresh_home(tmp_path, fetchdeliver_cmd):
    text = open(DOC, encoding="utf-8").read()
    found = blocks(text)
    assert [m for m, _ in found].count("install") == 1
    home = tmp_path / "home"
    home.mkdir()
    bindir = home / ".local" / "fetchdeliver" / "bin"
    bindir.mkdir(parents=True)
    installed = os.path.join(os.path.dirname(sys.executable), "fetchdeliver")
    assert os.path.exists(installed), "the test needs the installed console script"
    os.symlink(installed, bindir / "fetchdeliver")
    env = {k: v for k, v in os.environ.items() if not k.startswith("XDG_")}
    env.update(HOME=str(home), TMPDIR=str(tmp_path), PATH=f"{bindir}:/usr/local/bin:/usr/bin:/bin")
    outputs = []
    for marker, code in found:
        if marker == "install":
            assert PATH_LINE in code  # the document tells the reader to do what this test does
            continue
        if marker is not None:
            continue
        r = subprocess.run(["bash", "-e", "-c", code], cwd=home, env=env, capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, f"this block of {DOC} failed:\n{code}\n--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}"
        outputs.append(r.stdout)
    demo, configure, deliver = outputs
    assert re.search(r"04-receipt\.eml\s+-> Receipts", demo), demo
    assert not [n for n in os.listdir(tmp_path) if n.startswith("fetchdeliver-demo-")], "demo cleaned up"
    assert "config.toml: OK" in configure and "rules.sieve: OK" in configure, configure
    assert deliver.splitlines()[-2:-1] == ["0"], deliver
    (name,) = os.listdir(home / "Mail" / ".Receipts" / "new")
    assert deliver.rstrip().endswith(name)
    with open(home / "Mail" / ".Receipts" / "new" / name, "rb") as f:
        assert f.read() == (home / "message.eml").read_bytes()
