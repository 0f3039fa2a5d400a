"""The editor in a real browser (Playwright driving the system's Chromium): load the page, click
the image and get the part whose upsampled map is strongest there, pick an appearance, move the
slider, export the PNG and find ``G.render(pj.edit(...))`` for the same settings in it; the page
shows server errors. Screenshot: ``$PANDA_EDITOR_SCREENSHOT`` if set (docs/editor.png is made so)."""

import os
import shutil
import tempfile

import numpy as np
import pytest

pytest.importorskip("torch")

CHROMIUM = os.environ.get("PANDA_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def page(editor):
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM}; install it with `apt-get install -y chromium` (CI does)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra)")
    profile = tempfile.mkdtemp(prefix="panda-editor-chromium-")
    with sync_api.sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True, args=FLAGS,
                                                   viewport={"width": 1320, "height": 900}, accept_downloads=True)
        pg = ctx.new_page()
        errors, outside = [], []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.on("request", lambda r: outside.append(r.url) if not r.url.startswith((editor.url, "data:", "blob:")) else None)
        pg.goto(editor.url)
        pg.wait_for_selector("body[data-ready='1']", timeout=60_000)
        yield pg, errors, outside
        ctx.close()
    shutil.rmtree(profile, ignore_errors=True)


def until(pg, expression, timeout=30.0):
    """Poll a JavaScript expression until it is truthy (the page's CSP forbids eval, and with it
    Playwright's wait_for_function)."""
    import time

    t = time.perf_counter()
    while not pg.evaluate(expression):
        assert time.perf_counter() - t < timeout, f"timed out waiting for {expression}"
        pg.wait_for_timeout(100)


def settle(pg, key="edits"):
    """Wait until the page's requests of a kind have stopped (its counter stays put)."""
    last = None
    for _ in range(100):
        now = pg.evaluate(f"document.body.dataset.{key}")
        if now == last and pg.evaluate("document.querySelectorAll('#stage img[src]').length") == 1:
            return
        last = now
        pg.wait_for_timeout(150)


def test_click_pick_slide_export(page, editor_reference, tmp_path):
    import panda_jax as pj
    from PIL import Image

    from test_editor import close, reference

    pg, errors, outside = page
    G, F, info = editor_reference
    # The pixel to click: where the strongest (upsampled) part is clearly ahead, and not part 0
    # (selected at start), so the click must change the selection.
    maps = np.stack([np.asarray(pj.part_map(F, k)) for k in range(F.rank_s)])
    up = np.asarray(pj.resize_maps(maps, tuple(info["map_size"])))
    top2 = np.sort(up, axis=0)
    margin = np.where(np.argmax(up, axis=0) != 0, top2[-1] - top2[-2], -1)
    y, x = np.unravel_index(np.argmax(margin), margin.shape)
    want = int(np.argmax(up[:, y, x]))
    box = pg.locator("#brush").bounding_box()
    mh, mw = info["map_size"]
    pg.mouse.click(box["x"] + (x + 0.5) * box["width"] / mw, box["y"] + (y + 0.5) * box["height"] / mh)
    sel = pg.locator("#stack li.selected")
    assert sel.get_attribute("data-part") == str(want)
    assert pg.locator("#part-list button.selected").get_attribute("data-part") == str(want)

    # an appearance from the gallery, then the slider moved with the keyboard
    settle(pg, "gallery")
    j = min(2, info["ranks"][0] - 1)
    pg.click(f"#gallery .thumb[data-appearance='{j}']")
    assert sel.get_attribute("data-appearance") == str(j)
    pg.focus("#alpha")
    for _ in range(7):
        pg.keyboard.press("ArrowRight")
    settle(pg)
    alpha = float(sel.get_attribute("data-alpha"))
    assert alpha != info["alpha"] and abs(alpha) <= info["alpha_range"][1]

    with pg.expect_download() as dl:
        pg.click("#export-png")
    path = tmp_path / "edit.png"
    dl.value.save_as(path)
    got = np.asarray(Image.open(path).convert("RGB"))
    close(got, reference(G, F, info["seed"], [{"part": want, "appearance": j, "alpha": alpha}]))
    # the page shows what it exported
    shown = pg.evaluate("document.getElementById('edited').src")
    import base64
    import io

    close(np.asarray(Image.open(io.BytesIO(base64.b64decode(shown.split(",", 1)[1]))).convert("RGB")), got, 0)

    pg.click("#sal-refresh")
    until(pg, "document.getElementById('sal-nobg').complete && !!document.getElementById('sal-nobg').src")
    shot = os.environ.get("PANDA_EDITOR_SCREENSHOT") or str(tmp_path / "editor.png")
    pg.screenshot(path=shot, full_page=True)
    assert os.path.getsize(shot) > 10_000
    assert not errors, errors
    assert not outside, f"the page fetched from elsewhere: {outside}"


def test_brush_stack_and_errors(page):
    pg, errors, _ = page
    n = pg.locator("#stack li").count()
    pg.click("#add-edit")
    assert pg.locator("#stack li").count() == n + 1
    pg.check("#brush-mode")
    box = pg.locator("#brush").bounding_box()
    pg.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.4)
    pg.mouse.down()
    pg.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.5, steps=8)
    pg.mouse.up()
    pg.click("#brush-apply")
    pg.wait_for_selector("#stack li.selected[data-mask='1']")
    # reorder and remove
    pg.locator("#stack li.selected button[title='move up']").click()
    assert pg.locator("#stack li").nth(n - 1).get_attribute("data-mask") == "1"
    pg.locator("#stack li.selected button[title='remove']").click()
    assert pg.locator("#stack li").count() == n
    # a server error reaches the page, and the page keeps working
    pg.fill("#seed", "99999999999")
    pg.press("#seed", "Enter")
    pg.wait_for_selector("#error:not([hidden])")
    assert "out of range" in pg.inner_text("#error-text")
    pg.fill("#seed", "7")
    pg.press("#seed", "Enter")
    until(pg, "document.body.dataset.sample === '7'")
    assert not errors, errors
