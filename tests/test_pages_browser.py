"""The web page in a real headless Chromium (Debian's chromium and chromium-driver, Selenium)
against `appliance run` as a subprocess: log in, start a meeting from a file and watch its text
appear, stop it, find it, download its SRT, hear a line, send its email again, upload and trim a
recording, record one in the browser (Chromium's fake microphone), delete it, log out.

With APPLIANCE_SCREENSHOTS=FOLDER set, each page's screenshot is written there (PNG), as
`docs/screenshots/` was made.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait
from test_daemon import APPLIANCE, JFK, MEETING, Daemon

PASSWORD = "correct horse battery"
DEADLINE_S = 120


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def browser(tmp_path):
    """Headless Chromium at a phone's width, downloading into tmp_path/downloads."""
    options = webdriver.ChromeOptions()
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        # A microphone that beeps, allowed without asking; and playing without a gesture.
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        "--autoplay-policy=no-user-gesture-required",
    ):
        options.add_argument(argument)
    options.add_argument("--window-size=420,900")
    options.binary_location = "/usr/bin/chromium"
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    driver.downloads = downloads
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def box(tmp_path):
    """The daemon with its web page, audio kept a day, and ffmpeg (the imageio-ffmpeg wheel's)
    on its PATH to read what the browser records."""
    port = _free_port()
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "ffmpeg").symlink_to(imageio_ffmpeg.get_ffmpeg_exe())
    daemon = Daemon(
        tmp_path,
        f'[web]\nlisten = "127.0.0.1:{port}"\n',
        env={"PATH": f"{tools}{os.pathsep}{os.environ['PATH']}"},
        storage="keep_audio_days = 1\n",
    )
    set_password = subprocess.run(
        [*APPLIANCE, "web", "set-password", "--config", str(daemon.config)],
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert set_password.returncode == 0, set_password.stderr
    daemon.start()
    daemon.url = f"http://127.0.0.1:{port}"
    yield daemon
    daemon.close()


def _shot(driver, name: str) -> None:
    folder = os.environ.get("APPLIANCE_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(folder) / f"{name}.png"))


def _wait(driver, condition):
    # An element found just before a form's answer replaces the page is stale: look again.
    ignored = (StaleElementReferenceException,)
    return WebDriverWait(driver, DEADLINE_S, ignored_exceptions=ignored).until(condition)


def test_login_watch_a_meeting_download_and_log_out(box, browser):
    deadline = time.monotonic() + DEADLINE_S
    while True:  # the server comes up beside the daemon, just after READY
        browser.get(box.url + "/meetings")
        if "Log in" in browser.title or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert browser.current_url == box.url + "/login"  # redirected there, without a session
    assert "No meetings" not in browser.page_source
    _shot(browser, "login")
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "form[action='/login'] button").click()
    _wait(browser, expected_conditions.title_contains("Now"))
    assert browser.find_element(By.ID, "state").text == "idle"
    _shot(browser, "now-idle")

    started = box.cli(
        "start",
        "--from-file",
        str(MEETING),
        "--realtime",
        "--title",
        "Demo <1>",
        "--to",
        "anna@example.com",
    )
    browser.get(box.url + "/")
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#lines li"))  # pushed by SSE
    assert "Demo <1>" in browser.find_element(By.TAG_NAME, "main").text
    _shot(browser, "now-recording")
    browser.find_element(By.CSS_SELECTOR, "form[action='/stop'] button").click()
    _wait(browser, lambda d: d.find_element(By.ID, "state").text != "recording")

    browser.get(box.url + "/meetings")
    browser.find_element(By.LINK_TEXT, "Demo <1>").click()
    meeting_id = started.stdout.strip()
    assert browser.current_url == f"{box.url}/meetings/{meeting_id}"
    lines = browser.find_elements(By.CSS_SELECTOR, "#lines li")
    assert lines and lines[0].text.startswith("0:00:")
    browser.find_element(By.LINK_TEXT, "srt").click()
    srt = browser.downloads / f"meeting-{meeting_id}.srt"
    _wait(browser, lambda _: srt.exists() and srt.stat().st_size > 0)
    assert srt.read_text().startswith("1\n00:00:")

    def settled(driver) -> bool:  # an upload waits until the stopped meeting is final
        driver.get(box.url + "/")
        return driver.find_element(By.ID, "state").text in ("idle", "delivering")

    _wait(browser, settled)
    _hear_and_resend(browser, box, int(meeting_id))
    browser.get(box.url + "/upload")
    browser.find_element(By.ID, "audio").send_keys(str(JFK))
    browser.find_element(By.ID, "title").send_keys("Uploaded")
    browser.find_element(By.ID, "start_s").clear()
    browser.find_element(By.ID, "start_s").send_keys("1")
    browser.find_element(By.ID, "end_s").send_keys("7")
    _shot(browser, "upload")
    browser.find_element(By.CSS_SELECTOR, "form[action='/upload'] button[type=submit]").click()
    _wait(browser, expected_conditions.title_contains("Uploaded"))

    def transcribed(driver) -> bool:
        driver.refresh()
        return "fellow" in driver.find_element(By.TAG_NAME, "main").text.lower()

    _wait(browser, transcribed)
    shown = browser.find_element(By.TAG_NAME, "main").text
    assert "and so" not in shown.lower()  # the first second ("And so") was trimmed off
    assert ", 0:00:05, " in shown or ", 0:00:06, " in shown  # 1 s to 7 s
    uploaded = browser.current_url.rsplit("/", 1)[1]
    _wait(browser, settled)
    _record_and_delete(browser, box)
    assert box.cli("delete", uploaded).stdout.strip() == uploaded  # the same, from the CLI
    refused = box.cli("resend", uploaded, check=False)
    assert refused.returncode == 2 and f"no meeting {uploaded}" in refused.stderr

    browser.find_element(By.CSS_SELECTOR, "form[action='/logout'] button").click()
    _wait(browser, expected_conditions.title_contains("Log in"))
    browser.get(f"{box.url}/meetings/{meeting_id}")
    assert browser.current_url == box.url + "/login" and "lines" not in browser.page_source
    assert box.stop() == 0


def _hear_and_resend(browser, box, meeting_id: int) -> None:
    """Choosing a line (click or keyboard) plays the kept audio from its start; Resend mails
    the transcript again and the page shows its delivery per recipient."""
    listed = json.loads(box.cli("meetings", "--json").stdout)
    audio_s = next(m["audio_s"] for m in listed if m["id"] == meeting_id)
    browser.get(f"{box.url}/meetings/{meeting_id}")
    player = browser.find_element(By.ID, "player")
    lines = browser.find_elements(By.CSS_SELECTOR, "#lines a.line")
    assert len(lines) > 2
    seconds = float(lines[2].get_attribute("data-start"))
    lines[2].click()
    _wait(browser, lambda d: d.execute_script("return arguments[0].readyState", player) >= 1)
    duration = browser.execute_script("return arguments[0].duration", player)
    assert abs(duration - audio_s) < 0.1  # the whole recording, as WAV
    at = "return arguments[0].currentTime"
    _wait(browser, lambda d: seconds - 0.1 <= d.execute_script(at, player) <= seconds + 30)
    seconds = float(lines[1].get_attribute("data-start"))
    lines[1].send_keys(Keys.ENTER)  # a link: reached with Tab, chosen with Enter
    _wait(browser, lambda d: seconds - 0.1 <= d.execute_script(at, player) < seconds + 5)

    delivery = "#delivery tbody td:nth-child(2)"
    _wait(browser, lambda d: d.refresh() or d.find_element(By.CSS_SELECTOR, delivery).text)
    assert browser.find_element(By.CSS_SELECTOR, "#delivery td").text == "anna@example.com"
    browser.find_element(By.CSS_SELECTOR, "form[action$='/resend'] button").click()
    _wait(browser, lambda d: "sent again" in d.find_element(By.CSS_SELECTOR, "[role=alert]").text)

    def delivered(driver) -> bool:
        driver.refresh()
        return driver.find_element(By.CSS_SELECTOR, delivery).text == "delivered"

    _wait(browser, delivered)
    _shot(browser, "meeting")
    email = browser.find_element(By.XPATH, "//h2[text()='Email']")
    browser.execute_script("arguments[0].scrollIntoView()", email)
    _shot(browser, "meeting-email")


def _record_and_delete(browser, box) -> None:
    """Record two seconds of Chromium's fake microphone on the upload page; the box decodes
    what MediaRecorder made (WebM/Opus, through ffmpeg) into a meeting, which is then deleted."""
    browser.get(box.url + "/upload")
    state = browser.find_element(By.ID, "record-state")
    browser.find_element(By.ID, "record-start").click()
    _wait(browser, lambda _: state.text.startswith("Recording… 2 s"))
    _shot(browser, "record")
    browser.find_element(By.ID, "record-stop").click()
    _wait(browser, lambda _: state.text.startswith("Recorded"))
    browser.find_element(By.ID, "title").send_keys("Recorded here")
    browser.find_element(By.CSS_SELECTOR, "form[action='/upload'] button[type=submit]").click()
    _wait(browser, expected_conditions.title_contains("Recorded here"))
    page = browser.current_url

    def final(driver) -> bool:
        driver.refresh()
        return any(
            s in driver.find_element(By.TAG_NAME, "main").text for s in (", done", ", failed")
        )

    _wait(browser, final)
    listed = json.loads(box.cli("meetings", "--json").stdout)
    recorded = next(m for m in listed if m["title"] == "Recorded here")
    assert recorded["source"] != "microphone" and 1.0 <= recorded["audio_s"] <= 4.0
    assert recorded["state"] == "done" and not recorded["error"]

    browser.find_element(By.LINK_TEXT, "Delete this meeting…").click()
    assert browser.current_url == page + "/delete"
    _shot(browser, "delete")
    browser.find_element(By.CSS_SELECTOR, "form[action$='/delete'] button").click()
    _wait(browser, expected_conditions.title_contains("Meetings"))
    assert "was deleted" in browser.find_element(By.CSS_SELECTOR, "[role=alert]").text
    assert not browser.find_elements(By.LINK_TEXT, "Recorded here")
    _shot(browser, "meetings")
