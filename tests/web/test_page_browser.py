"""The live page in a real browser (Debian's headless Chromium through Selenium), against
ssdaq-web and the readout, trigger and timestamp receivers fed by the simulators.

One DAQ run serves the whole module (about 25 s): the camera's modules send a readout every
0.1 s for ``DURATION_S``, module ``STOPPED`` stops at ``STOP_AT_S``. The tests run in file order
along that timeline: pattern and live updates while all modules send, the grey module after the
stop, the receivers table once the simulators are done and the counters stand still.
"""

import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from ssdaq.data.readout import N_TM, N_TM_PIX
from ssdaq.simulators.tm import TMSimConfig, pattern_mv
from ssdaq.subscribers import ReadoutSubscriber
from tests.conftest import ROOT
from tests.web import browser, livedaq

pytestmark = pytest.mark.skipif(browser.missing() is not None, reason=str(browser.missing()))

DURATION_S = 9.0
STOP_AT_S = 4.0
STOPPED = 7
TACK0 = 10**18
SIM = TMSimConfig(rate=10.0, records_per_packet=1, duration=DURATION_S, tack0=TACK0)
#: where the screenshot goes (kept after the run, for a person to look at)
SCREENSHOT = ROOT / "test-output" / "web-page.png"

#: one consistent read of the camera: the number and every pixel in one script (one JS task)
READ_CAMERA = """
const px = document.querySelectorAll('#camera [data-pixel]');
return {number: document.getElementById('readout-number').textContent,
        tack: document.getElementById('readout-tack').textContent,
        pixels: Array.from(px, e => [+e.dataset.module, +e.dataset.pixel, e.dataset.value])};
"""


class Published:
    """Every readout the assembler publishes, by readout number (a subscriber of our own)."""

    def __init__(self, endpoint: str) -> None:
        self.sub = ReadoutSubscriber(endpoint=endpoint, timeout_s=0.2)
        self.by_number: dict[int, np.ndarray] = {}
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while self.running:
            for r in self.sub.take(100, 0.2):
                self.by_number[r.iro] = r.data.copy()

    def close(self) -> None:
        self.running = False
        self.thread.join()
        self.sub.close()


@pytest.fixture(scope="module")
def daq() -> Iterator[livedaq.LiveDaq]:
    run = livedaq.make(module_timeout_s=1.0)
    try:
        run.start_daq()
        yield run
    finally:
        livedaq.remove(run)


@pytest.fixture(scope="module")
def published(daq: livedaq.LiveDaq) -> Iterator[Published]:
    p = Published(daq.readout_endpoint)
    yield p
    p.close()


@pytest.fixture(scope="module")
def page(daq: livedaq.LiveDaq, published: Published) -> Iterator[Any]:
    with browser.chromium() as driver:
        driver.get(daq.url)
        driver.execute_script("window.loadedOnce = true")  # gone if the page reloads
        daq.start_simulators(DURATION_S, rate=SIM.rate, tack0=TACK0,
                             tm=("--stop-module", str(STOPPED), "--at", str(STOP_AT_S)))
        yield driver


def read_camera(page: Any) -> dict[str, Any]:
    return page.execute_script(READ_CAMERA)


def shown(page: Any) -> dict[str, Any]:
    """The camera once it shows a readout."""
    return livedaq.wait_until(lambda: (c := read_camera(page))["number"].isdigit() and c,
                              15, "a readout on the page")


def test_page_has_the_stable_hooks(page: Any) -> None:
    camera = read_camera(page)
    assert len(camera["pixels"]) == N_TM * N_TM_PIX
    assert sorted((m, p) for m, p, _ in camera["pixels"]) == [
        (m, p) for m in range(N_TM) for p in range(N_TM_PIX)]
    cells = page.execute_script(
        "return Array.from(document.querySelectorAll('#modules [data-module]'),"
        " e => [+e.dataset.module, e.dataset.present])")
    assert sorted(m for m, _ in cells) == list(range(N_TM))
    assert {present for _, present in cells} <= {"true", "false"}


def test_camera_shows_the_published_values_of_the_readout_number_shown(
        page: Any, published: Published) -> None:
    camera = shown(page)
    number, tack = int(camera["number"]), int(camera["tack"])
    k = (tack - TACK0) // SIM.period_ns
    assert SIM.readout_tack(k) == tack
    values = {(m, p): v for m, p, v in camera["pixels"]}
    expected = pattern_mv(np.arange(N_TM)[:, None], k, np.arange(N_TM_PIX))
    assert all(values[m, p] != "" and float(values[m, p]) == expected[m, p]
               for m in range(N_TM) for p in range(N_TM_PIX))
    livedaq.wait_until(lambda: number in published.by_number, 5, f"readout {number} published")
    data = published.by_number[number]
    assert [float(values[m, p]) for m in range(N_TM) for p in range(N_TM_PIX)] == \
        data.ravel().tolist()


def test_readout_number_advances_without_a_reload(page: Any) -> None:
    first = int(shown(page)["number"])
    later = livedaq.wait_until(lambda: int(read_camera(page)["number"]) > first and
                               int(read_camera(page)["number"]), 3, "a newer readout")
    assert later > first
    assert page.execute_script("return window.loadedOnce") is True
    frames = page.execute_script("return window.ssdaq.frames")
    times = np.array([f["t_ms"] for f in frames])
    assert len(frames) >= 3
    # at most ~5 frames/s: 0.2 s apart, give or take the jitter of a loaded machine
    assert (len(times) - 1) / (times[-1] - times[0]) * 1000 <= 5.5 and np.diff(times).min() >= 100


def test_a_stopped_module_turns_grey_and_absent(page: Any, daq: livedaq.LiveDaq) -> None:
    def absent() -> set[int]:
        cells = page.execute_script(
            "return Array.from(document.querySelectorAll('#modules [data-module]'),"
            " e => [+e.dataset.module, e.dataset.present])")
        return {m for m, present in cells if present == "false"}

    livedaq.wait_until(lambda: absent() == {STOPPED}, STOP_AT_S + daq.module_timeout_s + 5,
                       f"module {STOPPED}, and only it, absent")
    def stopped_pixels_empty() -> dict[str, Any] | None:
        camera = read_camera(page)
        return camera if all(v == "" for m, _, v in camera["pixels"] if m == STOPPED) else None

    camera = livedaq.wait_until(stopped_pixels_empty, 3, f"module {STOPPED}'s pixels empty")
    assert all(v != "" for m, _, v in camera["pixels"] if m != STOPPED)
    fills = page.execute_script(
        f"return Array.from(document.querySelectorAll('#camera [data-module=\"{STOPPED}\"]'),"
        " e => getComputedStyle(e).fill)")
    assert set(fills) == {"rgb(106, 111, 120)"}  # the page's grey for absent modules
    SCREENSHOT.parent.mkdir(exist_ok=True)
    assert page.save_screenshot(str(SCREENSHOT))
    print(f"screenshot: {SCREENSHOT}")


def test_receivers_table_lists_every_receiver_with_ssdaqctls_counters(
        page: Any, daq: livedaq.LiveDaq) -> None:
    daq.wait_simulators(DURATION_S + 20)
    # counters stand still once the assembler has published what it held
    def counters(report: dict[str, Any]) -> dict[str, Any]:
        return {r["name"]: (r["status"] or {}).get("counters") for r in report["receivers"]}

    livedaq.wait_until(lambda: counters(daq.ctl_status()) == counters(daq.ctl_status()), 10,
                       "steady counters", every_s=0.5)
    report = daq.ctl_status()
    expected = {r["name"]: r for r in report["receivers"]}

    def table() -> dict[str, Any]:
        return page.execute_script("""
            const out = {};
            for (const tr of document.querySelectorAll('#receivers tr[data-receiver]')) {
              const counters = {};
              for (const s of tr.nextElementSibling.querySelectorAll('[data-counter]'))
                counters[s.dataset.counter] = +s.dataset.count;
              const text = k => tr.querySelector(`td[data-field="${k}"]`).textContent;
              out[tr.dataset.receiver] = {health: text('health'), received: text('received'),
                published: text('published'), lost: tr.querySelector('td[data-field="lost"]')
                .dataset.total, counters};
            }
            return out;""")

    def matches() -> bool:
        rows = table()
        return set(rows) == set(expected) and all(
            rows[n]["counters"] == (expected[n]["status"] or {}).get("counters", {})
            for n in expected)

    livedaq.wait_until(matches, 5, "the table showing ssdaqctl's counters", every_s=0.2)
    rows = table()
    for name, state in expected.items():
        assert rows[name]["health"] == state["health"]
        status = state["status"]
        if status is None:
            continue
        assert rows[name]["received"] == str(status["counters"]["received"])
        assert rows[name]["published"] == str(status["counters"]["published"])
        assert rows[name]["lost"] == str(sum(status["lost"].values()))
    assert {"readout", "trigger", "timestamp"} <= {n for n, s in expected.items() if s["status"]}
    assert expected["readout"]["status"]["counters"]["published"] > 0
