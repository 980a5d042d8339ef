"""The playground page at `/`, end to end in headless Chromium (Debian's `chromium`, driven by Playwright;
no browser is downloaded): paste a free-tier key, generate, see the image in the gallery."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from store.embedded import EmbeddedRedis
from tests.conftest import ROOT, Proc, make_key

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs chromium: apt-get install chromium")


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield browser
        browser.close()


def test_page_is_served_without_a_key(gateway: str) -> None:
    import httpx

    page = httpx.get(gateway + "/")
    assert page.status_code == 200 and "fluxgate playground" in page.text
    assert "blob:" in page.headers["content-security-policy"]


def test_generate_in_the_browser(browser, gateway: str, redis_server: EmbeddedRedis, worker: Proc,  # noqa: ANN001
                                 tmp_path: Path) -> None:
    # Playwright's sync API keeps an event loop running in this thread; make_key needs its own.
    with ThreadPoolExecutor(1) as pool:
        key = pool.submit(make_key, redis_server.url, tier="free").result()
    page = browser.new_page(bypass_csp=True)  # lets the test evaluate JS; the page itself needs no eval
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(gateway + "/")
    page.fill("#key", key)
    page.click("#connect")
    page.wait_for_function("document.querySelector('#model').options.length >= 3")
    assert "images left today: 50" in page.text_content("#quota")  # the free tier's daily quota
    page.select_option("#model", "schnell")
    page.fill("#prompt", "a red circle on the left on a white background")
    page.fill("#width", "96")
    page.fill("#seed", "7")
    page.click("#generate")
    image = page.wait_for_selector("#gallery figure img", timeout=60_000)
    page.wait_for_function("document.querySelector('#gallery img').naturalWidth > 0")
    assert image.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [96, 64]
    assert image.get_attribute("src").startswith("blob:")  # fetched with the key header, not by URL
    assert "seed 7" in page.text_content("#gallery figcaption")
    assert page.eval_on_selector("#progress", "p => p.value") == 1
    assert "done in" in page.text_content("#status")
    # The RateLimit header of the last responses updated the quota line: one image used today.
    page.wait_for_function("document.querySelector('#quota').textContent.includes('images left: 49')")
    # A refused request shows the server's reason (dev is not on the free tier).
    page.select_option("#model", "dev")
    page.click("#generate")
    page.wait_for_function("document.querySelector('#status').classList.contains('error')")
    assert "403" in page.text_content("#status")
    assert not errors, errors
    # Kept as a test artifact: under the pytest tmp dir and in the git-ignored artifacts/ folder.
    shot = page.screenshot(path=str(tmp_path / "playground.png"), full_page=True)
    (ROOT / "artifacts").mkdir(exist_ok=True)
    (ROOT / "artifacts" / "playground.png").write_bytes(shot)
    page.close()
