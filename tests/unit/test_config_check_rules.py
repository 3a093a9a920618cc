"""`config check` and a rules file that is missing or mistyped (issue 21, item 6); `queue ACTION -c`."""

from fetchdeliver.commands import config_check
from fetchdeliver.errors import EX_CONFIG


def _write(tmp_path, text):
    p = tmp_path / "config.toml"
    p.write_text(f'[delivery]\nmaildir = "{tmp_path}/Mail"\n' + text)
    return str(p)


def test_a_missing_rules_file_fails_with_the_key_named(tmp_path, capsys):
    good = tmp_path / "good.sieve"
    good.write_text("keep;\n")
    path = _write(tmp_path, f'rules = "{tmp_path}/rulez.sieve"\n'
                            '[[account]]\nname = "a"\nprotocol = "imap"\nhost = "h"\nuser = "u"\npassword = "p"\n'
                            f'rules = "{good}"\n'
                            f'[[recipient]]\naddress = "x@y"\nrules = "{tmp_path}/missing2.sieve"\n')
    assert config_check(path) == EX_CONFIG
    out, err = capsys.readouterr()
    assert "OK" not in out
    assert f"error: {path}: delivery.rules: cannot read the rules file {tmp_path}/rulez.sieve: " \
           "No such file or directory" in err
    assert f"error: {path}: recipient[0].rules: cannot read the rules file {tmp_path}/missing2.sieve" in err
    assert "account[0]" not in err


def test_a_rules_file_that_does_not_compile_fails(tmp_path, capsys):
    bad = tmp_path / "bad.sieve"
    bad.write_text('fileinto "x";\n')
    path = _write(tmp_path, '[[account]]\nname = "a"\nprotocol = "imap"\nhost = "h"\nuser = "u"\n'
                            f'password = "p"\nrules = "{bad}"\n')
    assert config_check(path) == EX_CONFIG
    err = capsys.readouterr().err
    assert "account[0].rules:" in err and "bad.sieve:1:" in err, err


def test_good_rules_pass(tmp_path, capsys):
    good = tmp_path / "good.sieve"
    good.write_text("keep;\n")
    path = _write(tmp_path, f'rules = "{good}"\n')
    assert config_check(path) == 0
    assert capsys.readouterr().out == f"{path}: OK (0 account(s))\n"


def test_queue_takes_c_before_and_after_the_action():
    from fetchdeliver.cli import build_parser

    p = build_parser()
    for argv in (["queue", "list", "-c", "C"], ["queue", "-c", "C", "list"], ["queue", "flush", "--config", "C"],
                 ["queue", "remove", "ID", "-c", "C"]):
        args = p.parse_args(argv)
        assert args.config == "C", argv
    assert p.parse_args(["queue", "list"]).config is None
