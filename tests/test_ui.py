"""`blfs ui`: the status page and /metrics, against a real embedded cluster.

The cluster is blfsd.local.LocalCluster (real worker processes, the real protocol) on an
event loop of its own thread; jobs are submitted with the real `blfs submit --detach`;
`blfs ui` runs as a subprocess pointed at the master's socket; pages are read by a real
headless Chromium (skipped, with the reason, where it cannot run) and by plain HTTP."""
from __future__ import annotations

import asyncio
import http.client
import json
import logging
import os
import re
import shutil
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from blfsd import cli
from blfsd.local import LocalCluster

from conftest import EXAMPLES, JOBS, REPO, TAG, word_counts

prometheus_parser = pytest.importorskip("prometheus_client.parser")

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WINDOW = (1280, 900)
PATIENCE = 90.0  # seconds any one thing may take before the test gives up (not asserted)


# ------------------------------------------------------------------------------ the cluster

class Cluster:
    """A LocalCluster on its own event loop thread; its master's socket for the CLI."""

    def __init__(self, workers: int = 2, parallelism: int = 1):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.local = LocalCluster(workers, 1 << 20, 16, parallelism=parallelism)
        self.peer: Any = None

    def run(self, coro: Any, timeout: float = PATIENCE) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> "Cluster":
        # LocalCluster stops the "blfs" logger's propagation and leaves it so: put back
        # after stop(), or later tests' caplog would see nothing
        blfs_log = logging.getLogger("blfs")
        self.logger_was = (blfs_log.propagate, blfs_log.level)
        self.thread.start()
        self.run(self.local.__aenter__())
        self.peer = self.run(cli._client(self.local.socket_path, None))
        return self

    @property
    def socket(self) -> str:
        return self.local.socket_path

    def call(self, op: str, **fields: Any) -> Any:
        return self.run(self.peer.call(op, limit=30, **fields))

    def stop(self) -> None:
        if not self.loop.is_running():  # stopped already
            return
        if self.peer is not None:
            self.run(self.peer.close())
        self.run(self.local.__aexit__(None, None, None))
        self.run(_cancel_the_rest())  # as asyncio.run would (the master leaves heartbeats)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        blfs_log = logging.getLogger("blfs")
        blfs_log.propagate, level = self.logger_was
        blfs_log.setLevel(level)

    def submit(self, job: str, inputs: list, output: Path, *extra: str,
               job_args: tuple = ()) -> str:
        """`blfs submit --detach` against this master: the job's id."""
        argv = [sys.executable, "-m", "blfsd", "submit", job, "--output", str(output),
                "--master", self.socket, "--detach", *extra]
        for i in inputs:
            argv += ["--input", str(i)]
        if job_args:
            argv += ["--", *job_args]
        res = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=PATIENCE,
                             env=dict(os.environ, BLFS_TEST_TAG=TAG))
        assert res.returncode == 0, res.stderr
        return res.stdout.strip()

    def wait_state(self, job: str, *states: str) -> dict:
        return until(lambda: self.call("status", job=job),
                     lambda s: s["state"] in states, f"job {job} in {states}")

    def cancel(self, job: str) -> None:
        self.call("cancel", job=job)


async def _cancel_the_rest() -> None:
    rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in rest:
        task.cancel()
    await asyncio.gather(*rest, return_exceptions=True)


def until(get: Callable[[], Any], ok: Callable[[Any], bool], what: str,
          patience: float = PATIENCE) -> Any:
    """get() until ok(it); a failure naming `what` after `patience` seconds."""
    deadline = time.monotonic() + patience
    while True:
        value = get()
        if ok(value):
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"never saw {what}; last: {str(value)[:500]}")
        time.sleep(0.1)


@pytest.fixture
def cluster():
    c = Cluster().start()
    try:
        yield c
    finally:
        c.stop()


def text_input(path: Path, lines: int = 3000, seed: int = 7) -> Path:
    words = ["alpha", "beta", "gamma", "delta", "<b>tag</b>", "eps"]
    with open(path, "w", encoding="utf-8") as f:
        for i in range(lines):
            f.write(" ".join(words[(i * seed + j) % len(words)] for j in range(i % 5 + 1)) + "\n")
    return path


# ------------------------------------------------------------------------------ blfs ui

class Ui:
    """`python -m blfsd ui` as a subprocess on a free port of 127.0.0.1."""

    def __init__(self, master: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "blfsd", "ui", "--listen", "127.0.0.1:0", "--master", master],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env=dict(os.environ, BLFS_TEST_TAG=TAG))
        first = self.proc.stderr.readline()
        found = re.search(r"http://127\.0\.0\.1:(\d+)/", first)
        assert found, f"blfs ui did not say where it listens: {first!r}"
        self.port = int(found.group(1))
        self.url = f"http://127.0.0.1:{self.port}"

    def get(self, path: str, host: Optional[str] = None) -> tuple[int, dict, str]:
        """(status, headers, body) of one GET."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("GET", path, headers={"Host": host} if host else {})
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode()
        finally:
            conn.close()

    def stop(self) -> int:
        self.proc.terminate()
        try:
            return self.proc.wait(10)
        finally:
            self.proc.stderr.close()


@pytest.fixture
def ui(cluster):
    u = Ui(cluster.socket)
    try:
        yield u
    finally:
        if u.proc.poll() is None:
            u.stop()


# ------------------------------------------------------------------------------ the browser

def _browser_or_skip() -> Any:
    if not os.access(CHROMIUM, os.X_OK) or not os.access(CHROMEDRIVER, os.X_OK):
        pytest.skip(f"no {CHROMIUM} or {CHROMEDRIVER} (Debian: chromium chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:
        pytest.skip(f"no selenium ({exc}; Debian: python3-selenium)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={WINDOW[0]},{WINDOW[1]}", "--hide-scrollbars"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    except Exception as exc:  # no display libraries, a driver of another version...
        pytest.skip(f"chromium cannot run here: {str(exc).splitlines()[0]}")


@pytest.fixture
def browser():
    driver = _browser_or_skip()
    try:
        yield driver
    finally:
        driver.quit()


def console_errors(driver: Any) -> list:
    """What the page logged as errors (a 503 while the master is away would be one)."""
    return [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def text_of(driver: Any, css: str) -> str:
    """The visible text of the first element matching css, read in one script: the page
    swaps its <main> every few seconds, and an element found before may be gone after."""
    text = driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.innerText : null;", css)
    assert text is not None, f"no {css} in the page"
    return text.strip()


def viewport(driver: Any) -> tuple[int, int]:
    """The page's visible area in device pixels: what a screenshot holds."""
    w, h, ratio = driver.execute_script(
        "return [window.innerWidth, window.innerHeight, window.devicePixelRatio];")
    return round(w * ratio), round(h * ratio)


def table_rows(driver: Any, css: str) -> list:
    """The cells' texts of each body row of a table, read in one script."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0] + ' tbody tr'))"
        ".map(r => Array.from(r.cells).map(c => c.innerText.trim()));", css)


def click_link(driver: Any, text: str) -> None:
    """Click a link as a person would; again if the page swapped it away meanwhile."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    for _ in range(5):
        try:
            driver.find_element(By.LINK_TEXT, text).click()
            return
        except StaleElementReferenceException:
            continue
    pytest.fail(f"the link {text} kept changing under the click")


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) of a PNG; fails on anything else."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def png_distinct_bytes(path: Path) -> int:
    """Distinct byte values of the decompressed image data: a blank screenshot has
    about two (the filter byte, and white), a page with text and colours hundreds."""
    data, pos, idat = path.read_bytes(), 8, b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IDAT":
            idat += data[pos + 8:pos + 8 + length]
        pos += 12 + length
    return len(set(zlib.decompress(idat)))


def metrics_of(body: str) -> dict:
    """{(sample name, frozenset of labels): value} of a Prometheus text exposition."""
    out = {}
    for family in prometheus_parser.text_string_to_metric_families(body):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def sample(m: dict, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in m, f"no sample {name}{labels}; have {sorted(k[0] for k in m)[:40]}"
    return m[key]


def screenshot(driver: Any, path: Path) -> Path:
    """A PNG of the window; also copied to $BLFS_UI_SCREENSHOTS when set (to look at)."""
    assert driver.save_screenshot(str(path))
    if os.environ.get("BLFS_UI_SCREENSHOTS"):
        shutil.copy(path, os.path.join(os.environ["BLFS_UI_SCREENSHOTS"], path.name))
    return path


# ------------------------------------------------------------------------------ the tests

def test_jobs_page_lists_jobs_and_a_finished_job_shows_counters_and_timeline(
        cluster, ui, browser, tmp_path):
    from selenium.webdriver.common.by import By
    data = text_input(tmp_path / "in.txt")
    job = cluster.submit(os.path.join(EXAMPLES, "wordcount.py"), [data], tmp_path / "out",
                         "--split-size", "16K", "--reducers", "2")
    status = cluster.wait_state(job, "succeeded")
    browser.get(ui.url + "/")
    finished = text_of(browser, "#finished")
    assert job in finished and "succeeded" in finished and "wordcount" in finished
    assert "none" in text_of(browser, "#running")
    click_link(browser, job)
    until(lambda: browser.current_url, lambda u: u.endswith("/job/" + job), "the job's page")
    assert text_of(browser, "#state") == "succeeded"
    assert text_of(browser, "#progress").endswith("100.0%")
    counters = table_rows(browser, "table.counters")
    lines = sum(1 for _ in open(data, encoding="utf-8"))
    assert ["blfs", "map_input_records", str(lines)] in counters
    assert ["blfs", "reduce_output_records", str(len(word_counts(data)))] in counters
    read = status["counters"]["blfs"]["shuffle_read_bytes"]
    assert ["blfs", "shuffle_read_bytes", str(read)] in counters and read > 0
    # the timeline: one bar (a rect with a title) per attempt
    svg = browser.find_element(By.CSS_SELECTOR, "div.timeline svg")
    bars = svg.find_elements(By.CSS_SELECTOR, "rect title")
    assert len(bars) == len(status["attempts"]) and bars
    assert "<b>tag</b>" in word_counts(data)  # words of the input are not the page's HTML
    shot = screenshot(browser, tmp_path / "ui-job.png")
    assert png_size(shot) == viewport(browser)
    assert png_distinct_bytes(shot) > 50
    browser.get(ui.url + "/workers")
    workers = table_rows(browser, "table.workers")
    assert [r[:2] for r in workers] == [["w0", "up"], ["w1", "up"]]
    assert all(r[6].endswith(" ms") for r in workers)  # the heartbeat round trip
    screenshot(browser, tmp_path / "ui-workers.png")
    assert console_errors(browser) == []


def test_a_running_jobs_progress_moves_on_its_page_without_a_reload(
        cluster, ui, browser, tmp_path):
    data = text_input(tmp_path / "in.txt", lines=4000)
    job = cluster.submit(os.path.join(JOBS, "slow_wordcount.py"), [data], tmp_path / "out",
                         "--split-size", "6K", "--reducers", "1", job_args=("0.7",))
    cluster.wait_state(job, "running")
    browser.get(f"{ui.url}/job/{job}")
    browser.execute_script("window.blfsSameDocument = true;")
    first = text_of(browser, "#progress")
    assert text_of(browser, "#state") == "running" and not first.endswith("100.0%")
    moved = until(lambda: text_of(browser, "#progress"), lambda t: t != first,
                  "the progress move")
    assert float(moved.rstrip("%")) > float(first.rstrip("%"))
    assert browser.execute_script("return window.blfsSameDocument === true;"), \
        "the page was reloaded: its script should have updated it in place"
    screenshot(browser, tmp_path / "ui-running.png")
    cluster.wait_state(job, "succeeded")
    until(lambda: text_of(browser, "#state"), lambda t: t == "succeeded", "the end on the page")
    assert console_errors(browser) == []


def test_hostile_status_text_and_job_name_are_shown_as_text(cluster, ui, browser, tmp_path):
    from selenium.webdriver.common.by import By
    sys.path.insert(0, JOBS)
    from ui_hostile import HOSTILE
    name = "<svg onload=window.blfsPwned=3>"
    job_file = tmp_path / f"{name}.py"
    shutil.copy(os.path.join(JOBS, "ui_hostile.py"), job_file)
    job = cluster.submit(str(job_file), [text_input(tmp_path / "in.txt", lines=50)],
                         tmp_path / "out", "--reducers", "1", job_args=("120",))
    try:
        until(lambda: cluster.call("status", job=job),
              lambda s: any(a["status"] == HOSTILE for a in s["running"]), "the status text")
        status, _, body = ui.get(f"/job/{job}")
        assert status == 200 and HOSTILE not in body and name not in body
        assert "&lt;script&gt;document.title=&quot;pwned&quot;" in body
        browser.get(f"{ui.url}/job/{job}")
        assert text_of(browser, "table.running span.text") == HOSTILE  # shown, as text
        assert name in text_of(browser, "h1")
        assert browser.execute_script("return window.blfsPwned === undefined;")
        assert browser.title != "pwned"
        scripts = browser.find_elements(By.TAG_NAME, "script")
        assert [s.get_attribute("src") for s in scripts] == [ui.url + "/static/ui.js"]
        assert browser.find_elements(By.CSS_SELECTOR, "main img, main svg[onload]") == []
        screenshot(browser, tmp_path / "ui-hostile.png")
        browser.get(ui.url + "/")
        assert name in text_of(browser, "#running")
        assert browser.execute_script("return window.blfsPwned === undefined;")
        assert console_errors(browser) == []
    finally:
        cluster.cancel(job)


def test_metrics_match_the_cluster(cluster, ui, tmp_path):
    data = text_input(tmp_path / "in.txt")
    ok = cluster.submit(os.path.join(EXAMPLES, "wordcount.py"), [data], tmp_path / "out",
                        "--split-size", "16K", "--reducers", "2")
    done = cluster.wait_state(ok, "succeeded")
    bad = cluster.submit(os.path.join(JOBS, "cli_fail_map.py"), [data], tmp_path / "out2",
                         "--max-attempts", "2", job_args=("metrics",))
    failed = cluster.wait_state(bad, "failed")
    workers = until(lambda: cluster.call("workers"),
                    lambda ws: all("heartbeat_rtt" in w["info"] for w in ws), "heartbeats")
    code, headers, body = ui.get("/metrics")
    assert code == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    m = metrics_of(body)
    assert sample(m, "blfs_jobs", state="succeeded") == 1
    assert sample(m, "blfs_jobs", state="failed") == 1
    assert sample(m, "blfs_jobs", state="running") == 0
    assert sample(m, "blfs_jobs", state="queued") == 0
    assert sample(m, "blfs_tasks", kind="map", state="succeeded") == \
        done["maps"]["total"] + failed["maps"]["done"]
    assert sample(m, "blfs_tasks", kind="reduce", state="succeeded") == done["reduces"]["total"]
    assert sample(m, "blfs_tasks", kind="map", state="abandoned") == \
        failed["maps"]["total"] - failed["maps"]["done"] - failed["maps"]["running"]
    assert sample(m, "blfs_tasks", kind="map", state="pending") == 0
    user_failures = [f for f in failed["failed_attempts"] if f["kind"] == "user"]
    assert user_failures and sample(m, "blfs_attempts_failed_total", kind="user") == \
        len(user_failures)
    assert sample(m, "blfs_attempts_failed_total", kind="lost") == 0
    read = done["counters"]["blfs"]["shuffle_read_bytes"]
    assert read > 0 and sample(m, "blfs_shuffle_read_bytes_total") == read
    for w in workers:
        info = w["info"]
        assert sample(m, "blfs_worker_up", worker=w["name"]) == 1
        assert sample(m, "blfs_worker_slots", worker=w["name"]) == info["slots"]
        assert sample(m, "blfs_worker_disk_size_bytes", worker=w["name"]) == info["disk_bytes"]
        assert 0 <= sample(m, "blfs_worker_slots_free", worker=w["name"]) <= info["slots"]
        rtt = sample(m, "blfs_worker_heartbeat_rtt_seconds", worker=w["name"])
        assert 0 < rtt < cluster.local.heartbeat_timeout
    # free slots move as the pools release (heartbeats bring them): once two readings of
    # the master agree, the metrics read between them say the same
    def readings() -> tuple:
        before = {w["name"]: w["info"]["free_slots"] for w in cluster.call("workers")}
        got = metrics_of(ui.get("/metrics")[2])
        after = {w["name"]: w["info"]["free_slots"] for w in cluster.call("workers")}
        return before, {n: sample(got, "blfs_worker_slots_free", worker=n) for n in after}, after
    until(readings, lambda r: r[0] == r[2] and r[1] == r[2], "free slots as the master says")


def test_heartbeat_round_trip_is_in_each_workers_info(cluster):
    workers = until(lambda: cluster.call("workers"),
                    lambda ws: all("heartbeat_rtt" in w["info"] for w in ws), "heartbeats")
    assert len(workers) == 2
    for w in workers:
        rtt = w["info"]["heartbeat_rtt"]
        assert isinstance(rtt, float) and 0 < rtt < cluster.local.heartbeat_timeout
    res = subprocess.run([sys.executable, "-m", "blfsd", "workers", "--json", "--master",
                          cluster.socket], cwd=REPO, capture_output=True, text=True,
                         timeout=PATIENCE)
    assert res.returncode == 0, res.stderr
    assert all(w["info"]["heartbeat_rtt"] > 0 for w in json.loads(res.stdout))


def test_the_master_gone_is_a_503_of_one_line(cluster, ui):
    assert ui.get("/")[0] == 200
    cluster.stop()
    for path in ("/", "/workers", "/job/20260101-000000-abcd", "/metrics"):
        code, headers, body = ui.get(path)
        assert code == 503, (path, code, body[:300])
        assert body.endswith("\n") and body.count("\n") == 1, body
        assert "master" in body and "Traceback" not in body
        assert headers["content-type"].startswith("text/plain")
    assert ui.proc.poll() is None  # it stays up, for when the master is back


def test_a_master_that_never_was_is_a_503_too(tmp_path):
    ui = Ui(str(tmp_path / "no-master.sock"))
    try:
        code, _, body = ui.get("/")
        assert code == 503 and body.count("\n") == 1 and "cannot be reached" in body
    finally:
        assert ui.stop() == 0


def test_requests_it_does_not_serve(cluster, ui):
    assert ui.get("/job/no-such-job")[0] == 404
    assert ui.get("/nothing-here")[0] == 404
    code, _, body = ui.get("/", host="evil.example:8070")  # DNS rebinding
    assert code == 421 and body.count("\n") == 1
    assert ui.get("/", host=f"localhost:{ui.port}")[0] == 200
    conn = http.client.HTTPConnection("127.0.0.1", ui.port, timeout=30)
    conn.request("POST", "/", body=b"x")
    assert conn.getresponse().status == 405
    conn.close()
    code, headers, _ = ui.get("/")
    assert "script-src 'self'" in headers["content-security-policy"]


def test_it_listens_on_localhost_by_default():
    from blfsd.ui import command
    args = cli.build_parser().parse_args(["ui"])
    assert command.parse_listen(args.listen) == ("127.0.0.1", 8070)
    assert command.parse_listen("[::1]:9000") == ("::1", 9000)
    for bad in ("8070", "host:", "host:99999", ":80"):
        with pytest.raises(Exception, match="HOST:PORT"):
            command.parse_listen(bad)
