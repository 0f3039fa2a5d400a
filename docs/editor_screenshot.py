"""The README's screenshot of the editor: ``python docs/editor_screenshot.py [OUT.png]``.

Starts ``panda-jax serve`` on the embedded faces DCGAN (its default settings; cache in a temporary
folder), drives headless Chromium (Playwright, ``/usr/bin/chromium``): seed 2, a click on the
middle of the face selects the part there, the fourth appearance of the gallery at 35% of the slider's range, the
saliency view, the comparison with GANSpace, SeFa and ReSeFa; then a 1000-pixel-wide, 256-colour
PNG (under 300 KB).
"""
import os, re, subprocess, sys, tempfile, threading
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from test_editor_browser import FLAGS, CHROMIUM, until
from playwright.sync_api import sync_playwright
env = dict(os.environ, PANDA_JAX_CACHE=tempfile.mkdtemp(prefix="panda-shot-"))
exe = os.path.join(os.path.dirname(sys.executable), "panda-jax")
p = subprocess.Popen([exe, "serve", "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
url = None
for line in p.stdout:
    print(line.rstrip(), flush=True)
    m = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
    if m and "ready" in line:
        url = m.group(1); break
threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
with sync_playwright() as pw:
    ctx = pw.chromium.launch_persistent_context(tempfile.mkdtemp(), executable_path=CHROMIUM, headless=True, args=FLAGS,
                                                viewport={"width": 1320, "height": 900})
    pg = ctx.new_page()
    errs = []
    pg.on("pageerror", lambda e: errs.append(str(e)))
    pg.goto(url); pg.wait_for_selector("body[data-ready='1']", timeout=120_000)
    pg.fill("#seed", "2"); pg.press("#seed", "Enter"); pg.wait_for_timeout(800)
    box = pg.locator("#stage").bounding_box()
    pg.mouse.click(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.42)  # the middle of the face
    pg.wait_for_timeout(1500)
    g = pg.locator("#gallery img, #gallery button")
    print("gallery items", g.count())
    if g.count() > 6: g.nth(6).click()
    pg.wait_for_timeout(800)
    pg.evaluate("() => {const s=document.getElementById('alpha'); s.value = s.max*0.35; s.dispatchEvent(new Event('input')); s.dispatchEvent(new Event('change'));}")
    pg.wait_for_timeout(1500)
    pg.uncheck("#show-parts"); pg.wait_for_timeout(800); pg.click("#sal-refresh"); pg.wait_for_timeout(1500)
    pg.click("#compare-box summary") if pg.locator("#compare-box summary").count() else None
    pg.click("#compare-run"); 
    until(pg, "document.querySelectorAll('#compare img[src]').length >= 4", timeout=120)
    pg.wait_for_timeout(1000)
    print("compare text:", pg.inner_text("#compare")[:600])
    full = os.path.join(env["PANDA_JAX_CACHE"], "full.png")
    pg.screenshot(path=full, full_page=True)
    print("errors", errs)
    ctx.close()
p.terminate()
from PIL import Image

im = Image.open(full).convert("RGB")
im = im.resize((1000, round(im.height * 1000 / im.width)), Image.LANCZOS)
out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "docs", "editor.png")
im.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(out, optimize=True)
print(f"wrote {out} ({os.path.getsize(out) // 1024} KB)")
