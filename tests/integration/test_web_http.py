"""The web page over plain HTTP against a real `fetchdeliver web` process: the login wall (303), CSRF (403),
logins through the IMAP passwd-file, the rules endpoints, the non-loopback refusal; the delivery log and
`fetchdeliver log` with a real MDA delivery."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from web_support import Client, WebProc, env, passwd

PAGES = ["/", "/deliveries", "/queue", "/rules", "/deliveries?sender=x"]
POSTS = ["/logout", "/queue/abc/retry", "/queue/abc/remove", "/rules/check", "/rules/preview", "/rules/save"]

SCRIPT = """require ["fileinto", "imap4flags"];
if header :contains "subject" "invoice" {
    fileinto :flags "\\\\Flagged" "Bills";
    stop;
}
"""


def _config(tmp_path, extra: str = "") -> str:
    pw = passwd(tmp_path, {"alice": "secret", "bob": "other"})
    home = tmp_path / "home" / "alice"
    conf = tmp_path / "config.toml"
    conf.write_text(f'[delivery]\nmaildir = "{tmp_path / "Maildir"}"\nstate_dir = "{tmp_path / "state"}"\n'
                    f'rules = "{home}/.dovecot.sieve"\n\n[imap]\npasswd_file = "{pw}"\n\n'
                    f'[web]\nlogin_failure_delay = "0s"\n\n[log]\nmda = true\n' + extra)
    return str(conf)


@pytest.fixture
def web(tmp_path):
    proc = WebProc(_config(tmp_path), "--listen", "127.0.0.1:0")
    yield proc
    proc.stop()


def test_every_page_answers_303_to_login_without_a_session(web):
    c = Client(web.url)
    for path in PAGES:
        status, headers, _ = c.get(path)
        assert status == 303 and headers["location"] == "/login", path
    for path in POSTS:
        status, headers, _ = c.post(path, {"csrf": "whatever"})
        assert status == 303 and headers["location"] == "/login", path
    status, headers, page = c.get("/login")
    assert status == 200 and 'name="csrf"' in page
    cookie = headers["set-cookie"].lower()
    assert "samesite=strict" in cookie and "httponly" in cookie


def test_a_form_post_without_its_csrf_token_answers_403(web):
    c = Client(web.url)
    _s, _h, page = c.get("/login")
    # The login form itself needs the token.
    status, _h, _b = c.post("/login", {"user": "alice", "password": "secret"})
    assert status == 403
    token = c.login("alice", "secret")
    for path in POSTS:
        status, _h, body = c.post(path, {"script": "keep;"})
        assert status == 403, path
        status, _h, body = c.post(path, {"script": "keep;", "csrf": "wrong" + token})
        assert status == 403, path
    status, _h, _b = c.post_json("/rules/check", {"script": "keep;"}, None)
    assert status == 403
    # With the token the same requests work.
    status, _h, body = c.post_json("/rules/check", {"script": "keep;"}, token)
    assert status == 200 and json.loads(body) == {"ok": True, "errors": []}
    # A token from another session is refused too.
    other = Client(web.url)
    other_token = other.login("bob", "other")
    status, _h, _b = c.post("/rules/save", {"script": "keep;", "csrf": other_token})
    assert status == 403


def test_wrong_password_is_refused_and_logout_ends_the_session(web):
    c = Client(web.url)
    _s, _h, page = c.get("/login")
    status, _h, body = c.post("/login", {"csrf": Client.csrf(page), "user": "alice", "password": "nope"})
    assert status == 401 and "Wrong user name or password" in body
    assert c.get("/")[0] == 303
    token = c.login("alice", "secret")
    assert c.get("/")[0] == 200
    status, headers, _ = c.post("/logout", {"csrf": token})
    assert status == 303 and headers["location"] == "/login"
    assert c.get("/")[0] == 303


def test_rules_check_reports_line_and_column_and_save_goes_through_the_managesieve_store(web, tmp_path):
    c = Client(web.url)
    token = c.login("alice", "secret")
    broken = 'require "fileinto";\nif header :contains "subject" "x" {\n  fileinto "J"\n}\n'
    status, _h, body = c.post_json("/rules/check", {"script": broken}, token)
    res = json.loads(body)
    assert status == 200 and not res["ok"]
    assert res["errors"][0]["line"] == 4 and res["errors"][0]["column"] == 1
    assert "expected ';'" in res["errors"][0]["message"]
    # A script that does not compile is not saved.
    status, _h, body = c.post("/rules/save", {"csrf": token, "script": broken})
    assert status == 422 and "line 4, column 1" in body
    home = tmp_path / "home" / "alice"
    assert not os.path.lexists(home / ".dovecot.sieve")
    status, headers, _ = c.post("/rules/save", {"csrf": token, "script": SCRIPT.replace("\n", "\r\n")})
    assert status == 303 and headers["location"].startswith("/rules?saved=")
    # Pigeonhole's layout, as PUTSCRIPT + SETACTIVE leave it; the browser's CRLF stored as LF.
    assert os.readlink(home / ".dovecot.sieve") == "sieve/fetchdeliver.sieve"
    assert (home / "sieve" / "fetchdeliver.sieve").read_text() == SCRIPT
    _s, _h, page = c.get("/rules")
    assert "fileinto :flags" in page


def test_mda_delivery_is_logged_with_its_trace_and_shown(web, tmp_path):
    conf = str(tmp_path / "config.toml")
    home = tmp_path / "home" / "alice"
    (home / "sieve").mkdir()
    (home / "sieve" / "main.sieve").write_text(SCRIPT)
    os.symlink("sieve/main.sieve", home / ".dovecot.sieve")
    for subject in ("invoice 42", "hello"):
        raw = f"From: Shop <shop@example.org>\nTo: alice@example.org\nSubject: {subject}\n\nBody.\n".encode()
        r = subprocess.run([sys.executable, "-m", "fetchdeliver", "deliver", "-c", conf, "-f", "shop@example.org",
                            "-a", "alice@example.org"], input=raw, capture_output=True, timeout=60, env=env())
        assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "fetchdeliver", "log", "-c", conf, "--json"], capture_output=True,
                       text=True, timeout=60, env=env())
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["subject"] for row in rows] == ["invoice 42", "hello"]
    invoice = rows[0]
    assert invoice["kind"] == "MDA" and invoice["dest"] == ["maildir:Bills"] and invoice["flags"] == ["\\Flagged"]
    assert invoice["explained"][0] == 'rule at line 2 matched `header :contains "subject" "invoice"`'
    assert rows[1]["dest"] == ["maildir:INBOX"] and rows[1]["trace"] == []
    r = subprocess.run([sys.executable, "-m", "fetchdeliver", "log", "-c", conf, "--subject", "invoice"],
                       capture_output=True, text=True, timeout=60, env=env())
    assert "rule at line 2 matched" in r.stdout and "hello" not in r.stdout

    c = Client(web.url)
    c.login("alice", "secret")
    _s, _h, page = c.get("/deliveries?folder=Bills")
    assert "invoice 42" in page and "hello" not in page
    assert "rule at line 2 matched `header :contains &#34;subject&#34; &#34;invoice&#34;`" in page


def test_a_user_sees_only_deliveries_into_their_own_store(tmp_path):
    conf = _config(tmp_path)
    pw = tmp_path / "passwd"
    pw.write_text(pw.read_text().replace(f"{tmp_path}/home/bob::", f"{tmp_path}/home/bob::userdb_mail=maildir:"
                                         f"{tmp_path}/bobmail"))
    raw = b"From: a@example.org\nSubject: for alice\n\nx\n"
    r = subprocess.run([sys.executable, "-m", "fetchdeliver", "deliver", "-c", conf], input=raw,
                       capture_output=True, timeout=60, env=env())
    assert r.returncode == 0, r.stderr
    proc = WebProc(conf, "--listen", "127.0.0.1:0")
    try:
        alice, bob = Client(proc.url), Client(proc.url)
        alice.login("alice", "secret")
        bob.login("bob", "other")
        assert "for alice" in alice.get("/deliveries")[2]
        assert "for alice" not in bob.get("/deliveries")[2]
    finally:
        proc.stop()


def test_refuses_plain_http_on_a_non_loopback_address(tmp_path):
    conf = _config(tmp_path)
    r = subprocess.run([sys.executable, "-m", "fetchdeliver", "web", "-c", conf, "--listen", "0.0.0.0:0"],
                       capture_output=True, text=True, timeout=60, env=env())
    assert r.returncode == 78
    assert "refusing to serve the web page without TLS on 0.0.0.0:0" in r.stderr
    assert "allow_insecure" in r.stderr


def test_config_check_knows_the_web_and_log_tables(tmp_path):
    conf = _config(tmp_path)
    text = open(conf).read().replace('login_failure_delay = "0s"', 'login_failure_delay = "0s"\nlisten = 5')
    open(conf, "w").write(text + '\n')
    r = subprocess.run([sys.executable, "-m", "fetchdeliver", "config", "check", "-c", conf],
                       capture_output=True, text=True, timeout=60, env=env())
    assert r.returncode != 0 and "web.listen" in (r.stdout + r.stderr)
    text = text.replace("listen = 5", "").replace("mda = true", 'keep = "soon"')
    open(conf, "w").write(text)
    r = subprocess.run([sys.executable, "-m", "fetchdeliver", "config", "check", "-c", conf],
                       capture_output=True, text=True, timeout=60, env=env())
    assert r.returncode != 0 and "log.keep" in (r.stdout + r.stderr)


def test_https_with_a_certificate_and_secure_cookies(tmp_path):
    import http.cookiejar
    import ssl
    import urllib.request

    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_file, key_file, ca_file = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    for pem in cert.cert_chain_pems[1:]:
        pem.write_to_path(str(cert_file), append=True)
    cert.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(ca_file))
    conf = _config(tmp_path)
    text = open(conf).read().replace("[web]\n", f'[web]\nlisten = ""\ntls_listen = "127.0.0.1:0"\n'
                                               f'cert = "{cert_file}"\nkey = "{key_file}"\n')
    open(conf, "w").write(text)
    proc = subprocess.Popen([sys.executable, "-m", "fetchdeliver", "web", "-c", conf], stderr=subprocess.PIPE,
                            text=True, env=env())
    try:
        line = proc.stderr.readline()
        assert "listening on https://127.0.0.1:" in line, line
        url = line.split("listening on ")[1].strip().rstrip("/")
        ctx = ssl.create_default_context(cafile=str(ca_file))
        opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx),
                                             urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        with opener.open(url + "/login", timeout=30) as r:
            cookie = r.headers["set-cookie"].lower()
            assert r.status == 200 and "secure" in cookie and "samesite=strict" in cookie
    finally:
        proc.terminate()
        proc.wait(15)
        proc.stderr.close()


def test_queue_remove_and_who_sees_which_queued_message(tmp_path):
    from fetchdeliver.config import Settings, load
    from fetchdeliver.outbound.queue import OutboundQueue

    conf = _config(tmp_path, '\n[relay]\nhost = "127.0.0.1"\nport = 9\ntls = "none"\n')
    text = open(conf).read().replace("[web]\n", '[web]\nadmins = ["bob"]\n')
    text += '\n[[account]]\nname = "work"\nprotocol = "imap"\nhost = "127.0.0.1"\nuser = "alice"\npassword = "x"\n'
    open(conf, "w").write(text)
    q = OutboundQueue.from_settings(Settings(load(conf), conf))
    mine = q.enqueue("alice@example.org", "carol@example.org", b"Subject: mine\n\nx\n", origin="work")
    other = q.enqueue("", "dave@example.org", b"Subject: other\n\nx\n", origin="lmtp[127.0.0.1] <x@y>")
    q.close()
    proc = WebProc(conf, "--listen", "127.0.0.1:0")
    try:
        alice, bob = Client(proc.url), Client(proc.url)
        token = alice.login("alice", "secret")
        bob.login("bob", "other")
        page = alice.get("/queue")[2]
        assert mine in page and other not in page and "carol@example.org" in page   # her account's only
        page = bob.get("/queue")[2]
        assert mine in page and other in page                                         # an admin's view
        # alice cannot touch what is not hers; removing her own works.
        status, headers, _ = alice.post(f"/queue/{other}/remove", {"csrf": token})
        assert status == 303 and headers["location"] == "/queue?done=gone"
        status, headers, _ = alice.post(f"/queue/{mine}/remove", {"csrf": token})
        assert status == 303 and headers["location"] == "/queue?done=removed"
        q = OutboundQueue.from_settings(Settings(load(conf), conf))
        assert [i.id for i in q.items()] == [other]
        q.close()
        assert "The queue is empty." in alice.get("/queue")[2]
    finally:
        proc.stop()


def test_the_preview_runs_no_program_and_compares_with_the_active_script(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    marker = tmp_path / "ran"
    (bindir / "touchit").write_text(f"#!/bin/sh\ntouch {marker}\n")
    (bindir / "touchit").chmod(0o755)
    conf = _config(tmp_path, f'\n[sieve]\npipe_bin_dir = "{bindir}"\nextensions = ["+vnd.dovecot.execute"]\n')
    for sub in ("cur", "new", "tmp"):
        (tmp_path / "Maildir" / sub).mkdir(parents=True, exist_ok=True)
        (tmp_path / "Maildir" / ".Bills" / sub).mkdir(parents=True, exist_ok=True)
    (tmp_path / "Maildir" / ".Bills" / "cur" / "1.x:2,").write_bytes(b"From: a@b\nSubject: invoice 1\n\nx\n")
    (tmp_path / "Maildir" / "new" / "2.x").write_bytes(b"From: c@d\nSubject: hello\n\nx\n")
    proc = WebProc(conf, "--listen", "127.0.0.1:0")
    try:
        c = Client(proc.url)
        token = c.login("alice", "secret")
        assert c.post("/rules/save", {"csrf": token, "script": SCRIPT})[0] == 303
        script = 'require ["vnd.dovecot.execute"];\nexecute "touchit";\n'
        status, _h, body = c.post_json("/rules/preview", {"script": script}, token)
        res = json.loads(body)
        assert status == 200 and res["errors"] == [] and len(res["rows"]) == 2
        assert not marker.exists()
        rows = {r["subject"]: r for r in res["rows"]}
        assert rows["invoice 1"]["folder"] == "Bills"
        assert rows["invoice 1"]["current"] == ["fileinto Bills +\\Flagged"]
        assert rows["invoice 1"]["proposed"][0] == "keep INBOX" and rows["invoice 1"]["changed"]
        assert rows["hello"]["current"] == ["keep INBOX"] and rows["hello"]["folder"] == "INBOX"
        # A preview of a script with errors answers with them, line and column.
        status, _h, body = c.post_json("/rules/preview", {"script": "keep"}, token)
        assert json.loads(body)["errors"][0]["line"] == 1
    finally:
        proc.stop()


def test_without_a_passwd_file_the_error_says_where_logins_come_from(tmp_path):
    conf = tmp_path / "config.toml"
    conf.write_text(f'[delivery]\nmaildir = "{tmp_path / "M"}"\nstate_dir = "{tmp_path / "s"}"\n\n[web]\n')
    r = subprocess.run([sys.executable, "-m", "fetchdeliver", "web", "-c", str(conf)], capture_output=True,
                       text=True, timeout=60, env=env())
    assert r.returncode == 78
    assert "imap.passwd_file" in r.stderr and "fetchdeliver passwd USER" in r.stderr
