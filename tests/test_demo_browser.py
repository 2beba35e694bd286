"""The web demo in a real browser: `jam-flow demo` on a free local port, driven by headless Chromium (Selenium).

Needs Debian's Chromium and its driver (`apt-get install -y chromium chromium-driver`, docs/development.md); skipped
with the reason when they are absent. Marked slow: run with `pytest -m slow tests/test_demo_browser.py`.

Every tab runs once on a tiny random model; the TTS and text2av results are checked in the page: the `<audio>` and
`<video>` elements load, play and last as long as the requested speech. One bad input shows the CLI's line and the
app keeps serving. With `JAM_FLOW_DEMO_SCREENSHOTS=DIR` a screenshot of each tab is saved there (docs/img/ holds
the committed ones); `JAM_FLOW_DEMO_CKPT=CKPT_OR_EXPORT` serves that model instead of the random one.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import soundfile as sf
from inference_fixtures import write_export, write_inputs

CHROMIUM, DRIVER = (
    shutil.which("chromium") or "/usr/bin/chromium",
    shutil.which("chromedriver") or "/usr/bin/chromedriver",
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (Path(CHROMIUM).exists() and Path(DRIVER).exists()),
        reason="needs Debian's chromium + chromium-driver (apt-get install -y chromium chromium-driver)",
    ),
]
webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install -e '.[dev]')")
pytest.importorskip("gradio", reason="needs gradio (pip install -e '.[demo]')")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
WAIT_S = 240  # one request on a loaded 2-core machine, page start-up included

# plays the media element of a CSS selector (muted) and returns [duration, currentTime, readyState, error code]
PLAY_JS = """
const done = arguments[arguments.length - 1];
const el = document.querySelector(arguments[0]);
if (!el || !(el.currentSrc || el.src)) { done(null); return; }
el.muted = true;
const report = () => done([el.duration, el.currentTime, el.readyState, el.error ? el.error.code : null]);
el.play().then(() => setTimeout(report, 400)).catch(e => done(String(e)));
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo_browser")
    ckpt = os.environ.get("JAM_FLOW_DEMO_CKPT") or str(write_export(root))
    inputs = write_inputs(root)
    port = _free_port()
    out = root / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    cmd = [
        sys.executable,
        "-m",
        "jam_flow.cli",
        "demo",
        "--ckpt",
        ckpt,
        "--port",
        str(port),
        "--out",
        str(out),
    ]
    log = open(root / "server.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            urllib.request.urlopen(url, timeout=5).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                log.close()
                pytest.fail(f"jam-flow demo did not start:\n{(root / 'server.log').read_text()[-3000:]}")
            time.sleep(1)
    yield url, inputs, out
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--autoplay-policy=no-user-gesture-required",
        "--window-size=1400,1300",
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    driver.set_script_timeout(60)
    yield driver
    driver.quit()


def _open_tab(driver, task: str) -> None:
    tab = next(t for t in driver.find_elements(By.CSS_SELECTOR, "button[role=tab]") if t.text == task)
    tab.click()
    WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, f"{task}-run").is_displayed())


def _type(driver, elem_id: str, text: str) -> None:
    box = driver.find_element(By.CSS_SELECTOR, f"#{elem_id} textarea, #{elem_id} input")
    box.clear()
    box.send_keys(text)


def _upload(driver, elem_id: str, path: Path) -> None:
    driver.find_element(By.CSS_SELECTOR, f"#{elem_id} input[type=file]").send_keys(str(path))
    # uploaded: the file's name (file boxes) or a player (audio boxes) replaces the drop zone
    WebDriverWait(driver, 60).until(
        lambda d: (
            path.name in d.find_element(By.ID, elem_id).text
            or not d.find_elements(By.CSS_SELECTOR, f"#{elem_id} [data-testid=upload-text]")
        )
    )


def _generate(driver, task: str) -> str:
    status = driver.find_element(By.ID, f"{task}-status")
    before = status.text
    driver.find_element(By.ID, f"{task}-run").click()
    WebDriverWait(driver, WAIT_S, poll_frequency=0.5).until(
        lambda d: (t := status.text.strip()) and t != before and t.startswith(("done", "error"))
    )
    return status.text.strip()


def _play(driver, selector: str) -> list:
    """[duration, currentTime, readyState, error] once the element has its media and has played 0.4 s."""
    WebDriverWait(driver, 60).until(
        lambda d: d.execute_script(f"return !!document.querySelector('{selector}')")
    )
    result = driver.execute_async_script(PLAY_JS, selector)
    assert isinstance(result, list), f"{selector}: {result}"
    return result


def _screenshot(driver, task: str) -> None:
    folder = os.environ.get("JAM_FLOW_DEMO_SCREENSHOTS")
    if folder:
        driver.execute_script("window.scrollTo(0, 0)")
        height = driver.execute_script("return document.body.scrollHeight")
        driver.set_window_size(1400, max(900, min(int(height) + 40, 2400)))
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(folder) / f"demo_{task}.png"))
        driver.set_window_size(1400, 1300)


def _assert_plays(driver, selector: str, seconds: float, tolerance: float) -> None:
    duration, current, ready, error = _play(driver, selector)
    assert error is None and ready >= 2, (selector, error, ready)
    assert current > 0, f"{selector} did not play"
    assert abs(duration - seconds) <= tolerance, (selector, duration, seconds)


def test_every_tab_runs_in_chromium(server, browser):
    url, inputs, out = server
    d = browser
    d.get(url)
    WebDriverWait(d, WAIT_S).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#tts-text textarea"))

    # tts: a bad input first (the CLI's line, in the page), then the app serves the corrected request
    _type(d, "tts-text", "Hello there.")
    _upload(d, "tts-ref-audio", inputs["ref"])
    _type(d, "tts-duration", "1.0")
    _type(d, "tts-nfe", "0")
    assert _generate(d, "tts") == "error: --nfe: expected 1-1000, got 0"
    _type(d, "tts-nfe", "4")
    status = _generate(d, "tts")
    assert status.startswith("done"), status
    wav = next(out.glob("*-tts/audio.wav"))
    seconds = sf.info(str(wav)).duration
    assert abs(seconds - 1.0) < 0.02
    _assert_plays(d, "#tts-out-audio audio", seconds, 0.01)
    _screenshot(d, "tts")

    # text2av: speech + motion; the preview mp4 carries both and lasts as long as the speech
    _open_tab(d, "text2av")
    _type(d, "text2av-text", "Nice to meet you.")
    _type(d, "text2av-duration", "1.5")
    _type(d, "text2av-nfe", "4")
    status = _generate(d, "text2av")
    assert status.startswith("done") and "preview.mp4" in status, status
    seconds = sf.info(str(next(out.glob("*-text2av/audio.wav")))).duration
    assert abs(seconds - 1.5) < 0.02
    _assert_plays(d, "#text2av-out-audio audio", seconds, 0.01)
    _assert_plays(d, "#text2av-out-preview video", seconds, 0.1)
    _screenshot(d, "text2av")

    # the other tasks run from their tabs too
    for task, fill in (
        ("audio2motion", lambda: _upload(d, "audio2motion-audio", inputs["speech"])),
        ("dub", lambda: (_upload(d, "dub-motion", inputs["motion"]), _type(d, "dub-text", "A new line."))),
        ("motion2audio", lambda: _upload(d, "motion2audio-motion", inputs["motion"])),
        (
            "edit",
            lambda: (
                _upload(d, "edit-audio", inputs["speech"]),
                _upload(d, "edit-motion", inputs["motion"]),
                _type(d, "edit-edit-start", "0.2"),
                _type(d, "edit-edit-end", "0.6"),
            ),
        ),
    ):
        _open_tab(d, task)
        fill()
        _type(d, f"{task}-nfe", "4")
        status = _generate(d, task)
        assert status.startswith("done") and "preview.mp4" in status, (task, status)
        _screenshot(d, task)
