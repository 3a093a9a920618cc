"""The compiled-script cache and the `sieve check|test` command bodies."""

import json
import os
import subprocess
import sys

import pytest

from fetchdeliver.sieve import compile_file, tool
from fetchdeliver.sieve.errors import SieveCompileError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RULES = os.path.join(ROOT, "examples", "rules.sieve")

HOT = r"""
import sys
from fetchdeliver import sieve
from fetchdeliver.message import Message
s = sieve.compile_file(sys.argv[1], cache_dir=sys.argv[2])
raw = open(sys.argv[3], "rb").read()
m = Message(raw, "a@example.com", ["me+receipts@example.org"])
r = sieve.run(s, m, sieve.SieveEnv(m))
print(" ".join(a.type + ":" + getattr(a, "mailbox", "") for a in r.actions))
heavy = [x for x in ("lark", "re", "email", "dataclasses", "typing", "logging", "hashlib", "json")
         if x in sys.modules]
print("heavy=" + ",".join(heavy))
"""


def _run_hot(cache_dir, message):
    # -S: without site, the editable-install finder (which imports re/pathlib) is not in play.
    env = dict(os.environ, PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-S", "-c", HOT, RULES, str(cache_dir), message],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_cache_hit_imports_nothing_heavy(tmp_path):
    msg = os.path.join(ROOT, "examples", "messages", "01-newsletter.eml")
    cache = tmp_path / "cache"  # not tmp_path itself: the XDG dirs of the test live there too
    compile_file(RULES, cache_dir=str(cache))  # fills the cache (imports Lark here, in pytest)
    entries = os.listdir(cache)
    assert len(entries) == 1 and entries[0].endswith(".svc")
    hit = _run_hot(cache, msg)
    assert hit[0].startswith("fileinto:Lists/")
    assert hit[1] == "heavy="


def test_cache_is_keyed_by_content_and_options(tmp_path):
    script = tmp_path / "r.sieve"
    cache = tmp_path / "cache"
    script.write_text('require "fileinto";\nfileinto "A";\n')
    a = compile_file(str(script), cache_dir=str(cache))
    script.write_text('require "fileinto";\nfileinto "B";\n')
    b = compile_file(str(script), cache_dir=str(cache))
    assert a.code != b.code and len(os.listdir(cache)) == 2
    compile_file(str(script), cache_dir=str(cache), options={"extensions": ["+editheader"]})
    assert len(os.listdir(cache)) == 3
    assert not [n for n in os.listdir(cache) if n.endswith(".tmp")]


def test_cache_entry_is_stale_when_an_include_changes(tmp_path):
    (tmp_path / "sub.sieve").write_text('require "fileinto";\nfileinto "one";\n')
    main = tmp_path / "main.sieve"
    main.write_text('require "include";\ninclude "sub";\n')
    cache = str(tmp_path / "cache")
    first = compile_file(str(main), cache_dir=cache)
    (tmp_path / "sub.sieve").write_text('require "fileinto";\nfileinto "two";\n')
    second = compile_file(str(main), cache_dir=cache)
    assert first.includes["personal:sub"]["code"][0][3] == ["one"]
    assert second.includes["personal:sub"]["code"][0][3] == ["two"]
    (tmp_path / "sub.sieve").write_text('fileinto "broken";\n')
    with pytest.raises(SieveCompileError):
        compile_file(str(main), cache_dir=cache)


def test_corrupt_cache_entry_is_recompiled(tmp_path):
    script = tmp_path / "r.sieve"
    script.write_text("keep;\n")
    cache = tmp_path / "cache"
    compile_file(str(script), cache_dir=str(cache))
    (entry,) = os.listdir(cache)
    (cache / entry).write_bytes(b"\x00garbage")
    assert compile_file(str(script), cache_dir=str(cache)).code[0][0] == "keep"


def test_unwritable_cache_dir_is_not_an_error(tmp_path):
    script = tmp_path / "r.sieve"
    script.write_text("keep;\n")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert compile_file(str(script), cache_dir=str(blocker / "sub")).code


def test_check_main(tmp_path, capsys):
    good = tmp_path / "good.sieve"
    good.write_text("keep;\n")
    bad = tmp_path / "bad.sieve"
    bad.write_text('require "fileinto";\nif true { fileinto "a" }\n')
    assert tool.check_main([str(good)]) == 0
    assert tool.check_main([str(good), str(bad), str(tmp_path / "missing.sieve")]) == 1
    out, err = capsys.readouterr()
    assert out == f"{good}: OK\n{good}: OK\n"  # success is said, once per file, like `config check`
    assert f"{bad}:2:24: error: expected ';' or '{{' after fileinto arguments, found '}}'" in err
    assert "missing.sieve: error: cannot read" in err


def test_test_main_text_and_json(tmp_path, capsys):
    script = tmp_path / "s.sieve"
    script.write_text('require ["fileinto", "imap4flags"];\naddflag "\\\\Seen";\nfileinto :flags "$X \\\\Flagged" "A";\n'
                      'fileinto "A";\n')
    msg = tmp_path / "m.eml"
    msg.write_bytes(b"Subject: x\n\nbody\n")
    assert tool.test_main(str(script), str(msg)) == 0
    out = capsys.readouterr().out
    assert out.count("store message in folder: A") == 1  # merged like Pigeonhole: the last flags win
    assert "+ add IMAP flags: \\seen\n" in out
    assert "Implicit keep:\n\n  (none)" in out
    assert tool.test_main(str(script), str(msg), json_out=True) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["actions"] == [{"type": "fileinto", "mailbox": "A", "flags": ["\\Seen"],
                                "copy": False, "implicit": False}]
    bad = tmp_path / "bad.sieve"
    bad.write_text("nosuch;\n")
    assert tool.test_main(str(bad), str(msg)) == 1
    captured = capsys.readouterr()
    assert "unknown command 'nosuch'" in captured.err and captured.out == ""


def test_test_json_envelope():
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".sieve", delete=False) as f:
        f.write('require ["envelope", "fileinto"];\nif envelope :is "to" "x@y.z" { fileinto "X"; }\n')
    try:
        got = tool.test_json(f.name, b"Subject: a\n\nb\n", sender="s@y.z", recipient="x@y.z")
        assert got["actions"][0]["mailbox"] == "X" and got["errors"] == []
    finally:
        os.unlink(f.name)
