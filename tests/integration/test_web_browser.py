"""The web page in a real browser: headless Chromium (Debian's chromium + chromium-driver, driven by Selenium)
against `fetchdeliver daemon` fetching from a real Dovecot, with [web] in its config.

Log in, see the account, see a delivery with its Sieve trace, break the script and see the error at its
line, preview, save, retry a queued message. A screenshot of each page is kept in the test's tmp dir
(the path is printed; run pytest with -s to see it)."""

from __future__ import annotations

import os
import re
import shutil

import pytest

from dovecot import closed_port
from fetchsetup import FetchSetup
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait
from smtp_sinks import Sink
from test_daemon import DaemonProc
from web_support import passwd, wait_for

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

SCRIPT = """require ["fileinto", "imap4flags"];
if header :contains "subject" "invoice" {
    fileinto :flags "\\\\Flagged" "Bills";
    stop;
}
if header :contains "subject" "forward" {
    redirect "bob@example.org";
}
"""

BROKEN = 'require ["fileinto"];\nif header :contains "subject" "hello" {\n    fileinto "Greetings"\n}\n'
FIXED = ('require ["fileinto", "imap4flags"];\nif header :contains "subject" "hello" {\n'
         '    fileinto "Greetings";\n}\n')


def message(subject: str, sender: str = "Shop <shop@example.org>") -> bytes:
    return (f"From: {sender}\r\nTo: alice@example.org\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject.replace(' ', '.')}@example.org>\r\n\r\nBody of {subject}.\r\n").encode()


@pytest.fixture
def browser(tmp_path):
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip("Debian's chromium and chromium-driver are not installed (.ci/run installs them)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium-profile'}",
                 "--window-size=1280,1000"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def shot(driver, tmp_path, name: str) -> str:
    d = tmp_path / "screenshots"
    d.mkdir(exist_ok=True)
    path = str(d / f"{name}.png")
    # The whole page, not just the window (Chrome DevTools: capture beyond the viewport).
    import base64

    png = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
    with open(path, "wb") as f:
        f.write(base64.b64decode(png["data"]))
    print(f"screenshot: {path}")
    return path


def test_the_page_in_a_browser_against_a_daemon_fetching_from_dovecot(tmp_path, dovecot, fetchdeliver_cmd,
                                                                      browser):
    pw = passwd(tmp_path, {"alice": "secret"})
    home = tmp_path / "home" / "alice"
    (home / "sieve").mkdir()
    (home / "sieve" / "main.sieve").write_text(SCRIPT)
    os.symlink("sieve/main.sieve", home / ".dovecot.sieve")
    relay_port = closed_port()

    setup = FetchSetup(tmp_path, dovecot, fetchdeliver_cmd, rules=str(home / ".dovecot.sieve"))
    setup.account("work", poll="2s", idle=False)
    with open(setup.config, "a") as f:
        f.write(f'\n[imap]\npasswd_file = "{pw}"\n\n[web]\nlisten = "127.0.0.1:0"\nlogin_failure_delay = "0s"\n\n'
                f'[relay]\nhost = "127.0.0.1"\nport = {relay_port}\ntls = "none"\n')
    for subject in ("invoice 42", "hello there", "please forward this", "lunch"):
        dovecot.append("alice", message(subject))

    d = DaemonProc(setup.cmd, setup.config, str(tmp_path / "daemon.log"))
    sink = None
    try:
        d.wait_log(r"ready: ", timeout=30)
        url = d.wait_log(r"web: listening on (http://127\.0\.0\.1:\d+)/").group(1)
        # The four messages are fetched, filed, logged; the redirect sits in the queue (the relay is down).
        from fetchdeliver import deliverylog

        wait_for(lambda: len(deliverylog.query(setup.state_dir)) >= 4, 60, "four deliveries in the log")

        # -- log in ----------------------------------------------------------------------------------
        b = browser
        b.get(url + "/rules")
        assert b.current_url == url + "/login"           # every page sends a stranger to the login
        b.find_element(By.ID, "user").send_keys("alice")
        b.find_element(By.ID, "password").send_keys("secret")
        b.find_element(By.ID, "login").click()
        WebDriverWait(b, 20).until(EC.presence_of_element_located((By.ID, "account-work")))

        # -- dashboard: the account, its polls, the chart, the listeners, the queue --------------------
        card = b.find_element(By.ID, "account-work")
        assert "IMAP alice@127.0.0.1" in card.text and "polled" in card.text
        assert "Last error\nnone" in card.text
        assert re.search(r"per hour, last day \((\d+)\)", card.text).group(1) == "4"
        assert card.find_elements(By.CSS_SELECTOR, "svg.chart rect")
        assert "1 message" in b.find_element(By.ID, "queue-length").text
        assert "web" in b.find_element(By.TAG_NAME, "main").text
        shot(b, tmp_path, "1-dashboard")

        # -- deliveries with their trace ------------------------------------------------------------------
        b.find_element(By.LINK_TEXT, "Deliveries").click()
        WebDriverWait(b, 20).until(EC.presence_of_element_located((By.CSS_SELECTOR, "tr.delivery")))
        text = b.find_element(By.TAG_NAME, "main").text
        assert "invoice 42" in text and "maildir:Bills" in text and "\\Flagged" in text
        assert 'rule at line 2 matched `header :contains "subject" "invoice"`' in text
        assert "rule at line 6 matched" in text and "redirect bob@example.org" in text
        shot(b, tmp_path, "2-deliveries")
        box = b.find_element(By.NAME, "subject")
        box.send_keys("lunch")
        box.submit()
        WebDriverWait(b, 20).until(EC.url_contains("subject=lunch"))
        rows = b.find_elements(By.CSS_SELECTOR, "tr.delivery")
        assert len(rows) == 1 and "lunch" in rows[0].text

        # -- rules: break the script, see the error at its line ---------------------------------------------
        b.find_element(By.LINK_TEXT, "Rules").click()
        area = WebDriverWait(b, 20).until(EC.presence_of_element_located((By.ID, "script")))
        assert "fileinto :flags" in area.get_attribute("value")
        area.clear()
        area.send_keys(BROKEN)
        err = WebDriverWait(b, 20).until(EC.presence_of_element_located((By.CSS_SELECTOR, "li.compile-error")))
        assert err.get_attribute("data-line") == "4" and err.get_attribute("data-column") == "1"
        assert err.text.startswith("line 4, column 1: expected ';'")
        assert "\u25cf 4" in b.find_element(By.ID, "gutter").text      # the line is marked in the gutter
        shot(b, tmp_path, "3-rules-error")

        # -- fix it, preview on the last messages ----------------------------------------------------------
        area.clear()
        area.send_keys(FIXED)
        WebDriverWait(b, 20).until(EC.text_to_be_present_in_element((By.ID, "status"), "No errors."))
        b.find_element(By.ID, "preview").click()
        table = WebDriverWait(b, 30).until(EC.presence_of_element_located((By.ID, "preview-table")))
        changed = table.find_elements(By.CSS_SELECTOR, "tr.changed")
        assert len(changed) >= 2   # the invoice leaves Bills, "hello there" goes to Greetings
        hello = [r for r in table.find_elements(By.TAG_NAME, "tr") if "hello there" in r.text][0]
        assert "fileinto Greetings" in hello.text and "keep INBOX" in hello.text
        shot(b, tmp_path, "4-rules-preview")

        # -- save: the ManageSieve store, the active link ------------------------------------------------------
        b.find_element(By.ID, "save").click()
        WebDriverWait(b, 20).until(EC.presence_of_element_located((By.ID, "saved")))
        assert (home / "sieve" / "main.sieve").read_text() == FIXED
        assert os.readlink(home / ".dovecot.sieve") == "sieve/main.sieve"
        shot(b, tmp_path, "5-rules-saved")
        # The daemon uses it for the next message.
        dovecot.append("alice", message("hello again"))
        wait_for(lambda: any(r["subject"] == "hello again" and r["dest"] == ["maildir:Greetings"]
                             for r in deliverylog.query(setup.state_dir)), 60, "the saved script in use")

        # -- queue: the redirect waits, with its last answer; retry it once the relay is up ---------------------
        d.wait_log(r"deferred <bob@example\.org> \(try 1")     # its first try has answered
        b.find_element(By.LINK_TEXT, "Queue").click()
        row = WebDriverWait(b, 20).until(EC.presence_of_element_located((By.CSS_SELECTOR, "tr.queued")))
        assert "bob@example.org" in row.text and row.find_element(By.CLASS_NAME, "answer").text != "-"
        shot(b, tmp_path, "6-queue")
        sink = Sink(port=relay_port)
        row.find_element(By.CLASS_NAME, "retry").click()
        WebDriverWait(b, 20).until(EC.presence_of_element_located((By.ID, "queue-done")))
        wait_for(lambda: len(sink.messages) == 1, 30, "the retried message at the relay")
        assert b"please forward this" in sink.messages[0].data

        def queue_empty():
            b.get(url + "/queue")
            return b.find_elements(By.ID, "queue-empty")
        wait_for(queue_empty, 30, "an empty queue")
        shot(b, tmp_path, "7-queue-after-retry")
    finally:
        if sink is not None:
            sink.stop()
        rc, _ = d.stop()
    assert rc == 0, d.log()
