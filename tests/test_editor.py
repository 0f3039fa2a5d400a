"""``panda-jax serve``, the browser editor's server: started as a subprocess on a free port with
small fit settings. Its images equal ``G.render(pj.edit(...))``; malformed requests get a JSON
error and the server keeps serving; nothing compiles after the warm-up; the factors are cached;
an exported recipe applied by ``panda-jax edit --recipe`` equals the same edits made here."""

import base64
import http.client
import io
import json
import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest

pytest.importorskip("torch")

from conftest import EDITOR_ARGS, EditorProcess  # noqa: E402


def call(url, path, body=None, raw=None, method=None):
    """``(status, parsed JSON or bytes, content type)``; errors are answers too."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url + path.lstrip("/"), data=data, method=method or ("POST" if data is not None else "GET"))
    if data is not None:
        req.add_header("Content-Type", "application/octet-stream" if raw is not None else "application/json")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            status, payload, ctype = r.status, r.read(), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        status, payload, ctype = e.code, e.read(), e.headers.get("Content-Type", "")
    if ctype.startswith("application/json"):
        payload = json.loads(payload)
    return status, payload, ctype


def ok(url, path, body=None, **kw):
    status, payload, ctype = call(url, path, body, **kw)
    assert status == 200, (status, payload)
    return payload


def png(data) -> np.ndarray:
    from PIL import Image

    if isinstance(data, str):
        data = base64.b64decode(data.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def reference(G, F, seed, edits, layer=2):
    """The edits applied with pj.edit, in order, and rendered (uint8)."""
    import panda_jax as pj
    from panda_jax.app import figures, pipeline

    Z, ctx = G.features(pipeline.latents_for_seeds(G, [seed]), layer)
    for e in edits:
        if "mask" in e:
            Z = pj.edit(Z, F, mask=np.asarray(e["mask"], np.float32), appearance=e["appearance"], alpha=e["alpha"])
        else:
            Z = pj.edit(Z, F, part=e["part"], appearance=e["appearance"], alpha=e["alpha"])
    return figures.to_uint8(np.asarray(G.render(Z, layer, ctx))[0])


def close(a, b, levels=1):
    d = np.abs(a.astype(int) - b.astype(int))
    assert d.max() <= levels, f"max difference {d.max()} levels"


@pytest.fixture(scope="module")
def url(editor):
    return editor.url


@pytest.fixture(scope="module")
def info(url):
    return ok(url, "/api/info")


def test_first_start_fits_and_caches(editor, editor_cache, info):
    assert "fitting parts and appearances" in editor.output
    files = [f for f in os.listdir(editor_cache) if f.startswith("factors-") and f.endswith(".npz")]
    assert len(files) == 1 and info["factors_file"] == str(editor_cache.resolve() / files[0])
    assert info["family"] == "dcgan" and info["layer"] == 2 and info["ranks"] == [8, 4]
    assert info["image"] == [64, 64] and info["features"] == [8, 8, 256]
    lo, hi = info["alpha_range"]
    assert lo == -hi and hi > 0


def test_second_start_reuses_the_cached_factors(editor, editor_cache, info):
    again = EditorProcess(EDITOR_ARGS + ("--no-compare",), dict(os.environ), until=r"ranks \(8, 4\), factors (\S+)")
    again.stop()  # the factors are loaded: no need to wait for the warm-up
    assert "fitting" not in "\n".join(again.lines_at_start), again.output
    assert again.found == info["factors_file"]
    assert [f for f in os.listdir(editor_cache) if f.startswith("factors-")] == [os.path.basename(info["factors_file"])]


def test_page_and_assets_are_local(url):
    status, page, ctype = call(url, "/")
    assert status == 200 and ctype.startswith("text/html")
    text = page.decode()
    assert "http://" not in text and "https://" not in text and "//" + "cdn" not in text
    for asset in ("/app.js", "/style.css"):
        status, body, _ = call(url, asset)
        assert status == 200 and b"http://" not in body and b"https://" not in body and b"@import" not in body
    assert call(url, "/static/../../etc/passwd")[0] == 404
    assert call(url, "/..%2f..%2fpyproject.toml")[0] == 404


def test_edit_equals_pj_edit(url, editor_reference):
    G, F, info = editor_reference
    a = info["alpha"]
    for seed, edits in ((3, [{"part": 1, "appearance": 2, "alpha": a}]),
                        (5, [{"part": 0, "appearance": 1, "alpha": -0.7 * a},
                             {"part": 3, "appearance": 4, "alpha": 1.3 * a}])):
        r = ok(url, "/api/edit", {"sample": {"seed": seed}, "refine": False, "edits": edits})
        close(png(r["image"]), reference(G, F, seed, edits))
        assert len(r["roir"]) == len(edits) and all(v is None or v >= 0 for v in r["roir"])
    # the original image is the unedited sample
    r = ok(url, "/api/sample", {"sample": {"seed": 3}})
    close(png(r["image"]), reference(G, F, 3, []))


def test_click_labels_are_the_strongest_upsampled_part(url, editor_reference):
    import panda_jax as pj

    G, F, info = editor_reference
    r = ok(url, "/api/sample", {"sample": {"seed": 0}})
    mh, mw = r["map_size"]
    labels = np.frombuffer(base64.b64decode(r["labels"]), np.uint8).reshape(mh, mw)
    maps = np.stack([np.asarray(pj.part_map(F, k)) for k in range(F.rank_s)])
    up = np.asarray(pj.resize_maps(maps, (mh, mw)))
    top2 = np.sort(up, axis=0)[-2:]
    clear = top2[1] - top2[0] > 1e-4  # away from ties
    assert (labels[clear] == np.argmax(up, axis=0)[clear]).all()


def test_mask_edit_and_refined_parts(url, editor_reference):
    G, F, info = editor_reference
    brush = np.zeros(info["map_size"], np.uint8)
    brush[20:40, 10:30] = 255
    r = ok(url, "/api/mask", {"width": brush.shape[1], "height": brush.shape[0],
                               "data": base64.b64encode(brush.tobytes()).decode()})
    mask = np.asarray(r["mask"])
    assert mask.shape == (8, 8) and mask.max() > 0.5 and mask[0, 7] == 0
    edits = [{"mask": r["mask"], "appearance": 2, "alpha": info["alpha"]}]
    out = ok(url, "/api/edit", {"sample": {"seed": 2}, "edits": edits})
    close(png(out["image"]), reference(G, F, 2, edits))
    refined = ok(url, "/api/sample", {"sample": {"seed": 2}, "refine": True})
    assert refined["maps"] != ok(url, "/api/sample", {"sample": {"seed": 2}})["maps"]
    ok(url, "/api/edit", {"sample": {"seed": 2}, "refine": True, "edits": [{"part": 1, "appearance": 0, "alpha": 5.0}]})


def test_gallery_saliency_exports(url, info):
    state = {"sample": {"seed": 1}, "edits": [{"part": 2, "appearance": 0, "alpha": info["alpha"]}]}
    g = ok(url, "/api/gallery", {**state, "target": 0})
    assert g["appearances"] == list(range(info["ranks"][0])) and len(g["images"]) == info["ranks"][0]
    assert png(g["images"][0]).shape == (64, 64, 3)
    s = ok(url, "/api/saliency", {**state, "appearance": 1})
    for k in ("heatmap", "mask", "background_removed", "background_mask"):
        assert png(s[k]).shape == (64, 64, 3)
    status, body, ctype = call(url, "/api/export/png", state)
    assert status == 200 and ctype == "image/png"
    close(png(body), png(ok(url, "/api/edit", state)["image"]), 0)
    status, body, ctype = call(url, "/api/export/gif", {**state, "target": 0, "frames": 5})
    assert status == 200 and ctype == "image/gif" and body[:6] == b"GIF89a"
    from PIL import Image

    assert Image.open(io.BytesIO(body)).n_frames == 8  # 5 frames there and 3 back
    recipe = ok(url, "/api/export/recipe", state)
    assert recipe["format"] == "panda-jax edit recipe" and recipe["version"] == 1 and recipe["seed"] == 1


def test_uploaded_latent(url, editor_reference):
    from panda_jax.app import pipeline

    G, F, info = editor_reference
    z = np.asarray(pipeline.latents_for_seeds(G, [4]))
    buf = io.BytesIO()
    np.save(buf, z[0])
    lid = ok(url, "/api/latent", raw=buf.getvalue())["latent"]
    a = ok(url, "/api/sample", {"sample": {"latent": lid}})["image"]
    close(png(a), png(ok(url, "/api/sample", {"sample": {"seed": 4}})["image"]), 0)


def test_malformed_requests_get_json_errors_and_the_server_keeps_serving(url, info):
    s = {"sample": {"seed": 0}}
    good = {**s, "edits": [{"part": 0, "appearance": 0, "alpha": 1.0}]}

    def bad(path, body=None, raw=None, status=400, text=""):
        got, payload, ctype = call(url, path, body, raw=raw)
        assert got == status, (path, body if raw is None else raw[:60], got, payload)
        assert ctype.startswith("application/json") and isinstance(payload.get("error"), str), payload
        assert text.lower() in payload["error"].lower(), payload["error"]

    bad("/api/edit", raw=b"{not json", text="not valid JSON")
    bad("/api/edit", raw=b'{"sample": {"seed": 0}, "edits": [{"part": 0, "appearance": 0, "alpha": NaN}]}',
        text="finite")
    bad("/api/edit", {**s, "edits": [{"part": 0, "appearance": 0, "alpha": "nan"}]}, text="finite number")
    bad("/api/edit", {**s, "edits": [{"part": 0, "appearance": 0, "alpha": 1e300}]}, text="range")
    bad("/api/edit", {**s, "edits": [{"part": info["ranks"][1], "appearance": 0, "alpha": 1.0}]}, text="out of range")
    bad("/api/edit", {**s, "edits": [{"part": 0, "appearance": -1, "alpha": 1.0}]}, text="out of range")
    bad("/api/edit", {**s, "edits": [{"part": True, "appearance": 0, "alpha": 1.0}]}, text="integer")
    bad("/api/edit", {**s, "edits": [{"part": 0, "mask": [[0]], "appearance": 0, "alpha": 1.0}]}, text="exactly one")
    bad("/api/edit", {**s, "edits": [{"mask": [[0.5]], "appearance": 0, "alpha": 1.0}]}, text="rows")
    bad("/api/edit", {**s, "edits": [{"part": 0, "appearance": 0, "alpha": 1.0}] * 9}, text="at most")
    bad("/api/edit", {**s, "edits": [], "path": "/etc/passwd"}, text="unknown keys")
    bad("/api/edit", {"sample": {"seed": 2 ** 40}}, text="out of range")
    bad("/api/edit", {"sample": {"latent": "../../etc/passwd"}}, status=404, text="not known")
    bad("/api/edit", [1, 2], text="JSON object")
    bad("/api/gallery", {**good, "target": 3}, text="out of range")
    bad("/api/mask", {"width": 3, "height": 3, "data": "AAAA"}, text="out of range")
    bad("/api/nowhere", {}, status=404, text="no such endpoint")
    # uploads: pickles refused (allow_pickle=False), wrong shapes, non-finite values, too large
    buf = io.BytesIO()
    np.save(buf, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    bad("/api/latent", raw=buf.getvalue(), text="not a plain .npy")
    buf = io.BytesIO()
    np.save(buf, np.zeros((3, 7), np.float32))
    bad("/api/latent", raw=buf.getvalue(), text="shape")
    buf = io.BytesIO()
    np.save(buf, np.full(info["z_dim"], np.nan, np.float32))
    bad("/api/latent", raw=buf.getvalue(), text="NaN")
    bad("/api/latent", raw=b"garbage", text="npy")
    bad("/api/latent", raw=b"\0" * (2 << 20), status=413, text="at most")
    # a huge body is refused from its Content-Length, before it is read
    host = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(host.hostname, host.port, timeout=30)
    conn.putrequest("POST", "/api/edit")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(1 << 30))
    conn.endheaders()
    resp = conn.getresponse()
    assert resp.status == 413 and "error" in json.loads(resp.read())
    conn.close()
    # another host name (DNS rebinding) and a cross-site origin are refused on loopback
    for header, value in (("Host", "evil.example:80"), ("Origin", "http://evil.example")):
        conn = http.client.HTTPConnection(host.hostname, host.port, timeout=30)
        body = json.dumps(good).encode()
        conn.request("POST", "/api/edit", body=body, headers={header: value, "Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 403, (header, resp.status)
        resp.read()
        conn.close()
    assert call(url, "/api/edit", method="DELETE")[0] == 405
    # still serving, and still right
    assert ok(url, "/api/info")["family"] == "dcgan"
    ok(url, "/api/edit", good)


def test_nothing_compiles_after_the_warm_up(url, info):
    before = ok(url, "/api/info")
    assert before["compilations"]["ready"] is not None
    a = info["alpha"]
    R_C, R_S = info["ranks"]
    mask = (np.arange(64).reshape(8, 8) % 3 == 0).astype(float).tolist()
    for i in range(12):  # slider moves, parts, appearances, masks, refined parts, samples
        edits = [{"part": i % R_S, "appearance": (3 * i) % R_C, "alpha": a * (i - 6) / 3}]
        if i % 3 == 0:
            edits.append({"mask": mask, "appearance": i % R_C, "alpha": -a})
        body = {"sample": {"seed": 100 + i % 4}, "refine": i % 4 == 1, "edits": edits}
        ok(url, "/api/edit", body)
        if i % 4 == 0:
            ok(url, "/api/sample", {"sample": body["sample"], "refine": body["refine"]})
            ok(url, "/api/gallery", {**body, "target": len(edits) - 1})
            ok(url, "/api/saliency", {**body, "appearance": i % R_C})
            call(url, "/api/export/png", body)
    if before["compare"]:
        ok(url, "/api/compare", {"sample": {"seed": 101}, "edits": [{"part": 1, "appearance": 1, "alpha": a}]})
    after = ok(url, "/api/info")
    assert after["compilations"]["total"] == before["compilations"]["total"] == before["compilations"]["ready"], (
        before["compilations"], after["compilations"])
    assert after["jit_cache"] == before["jit_cache"] and set(after["jit_cache"].values()) == {1}


def test_compare_shows_roir_per_method(url, info):
    if not info["compare"]:
        pytest.skip(f"comparison off: {info['compare_error']}")
    r = ok(url, "/api/compare", {"sample": {"seed": 3}, "edits": [{"part": 1, "appearance": 2, "alpha": info["alpha"]}]})
    names = [m["name"] for m in r["methods"]]
    assert names == ["PandA", "GANSpace", "SeFa", "ReSeFa"]
    for m in r["methods"]:
        assert png(m["image"]).shape == (64, 64, 3)
        assert m["roir"] is None or m["roir"] >= 0
    alpha = r["methods"][1]["alpha"] * 0.5
    r2 = ok(url, "/api/compare", {"sample": {"seed": 3}, "edits": [{"part": 1, "appearance": 2, "alpha": info["alpha"]}],
                                  "alphas": {"GANSpace": alpha}})
    assert r2["methods"][1]["alpha"] == alpha


def test_recipe_applies_to_many_seeds_like_per_seed_edits(url, editor_reference, tmp_path):
    G, F, info = editor_reference
    a = info["alpha"]
    mask = np.zeros((8, 8))
    mask[2:5, 1:4] = 1.0
    edits = [{"part": 1, "appearance": 2, "alpha": 0.8 * a}, {"mask": mask.tolist(), "appearance": 3, "alpha": -a}]
    recipe = ok(url, "/api/export/recipe", {"sample": {"seed": 0}, "edits": edits})
    path = tmp_path / "r.json"
    path.write_text(json.dumps(recipe))
    out = tmp_path / "out"
    exe = os.path.join(os.path.dirname(sys.executable), "panda-jax")
    res = subprocess.run([exe, "edit", "--recipe", str(path), "--seeds", "0-3", "--out", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    meta = json.loads((out / "edit.json").read_text())
    assert meta["seeds"] == [0, 1, 2, 3] and meta["edits"] == 2
    for s in range(4):
        close(png((out / f"seed{s}_edited.png").read_bytes()), reference(G, F, s, edits))
    # --part with --recipe is refused in one line
    res = subprocess.run([exe, "edit", "--recipe", str(path), "--part", "1", "--out", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "drop --part" in res.stderr


def test_recipe_validation_is_strict(tmp_path):
    from panda_jax.app import recipe

    good = recipe.make("default", 2, str(tmp_path / "f.npz"), "0" * 64, (8, 4), (8, 8, 256),
                       [recipe.edit_entry(1, 2.5, part=[0, 1]), recipe.edit_entry(0, -1.0, mask=np.zeros((8, 8)))])
    assert recipe.validate(json.loads(recipe.dumps(good)))

    def broken(change, text):
        r = json.loads(json.dumps(good))
        change(r)
        with pytest.raises(recipe.RecipeError, match=text):
            recipe.validate(r)

    broken(lambda r: r.update(format="something else"), "not an edit recipe")
    broken(lambda r: r.update(version=2), "version 2 is not supported")
    broken(lambda r: r.update(extra=1), "unknown keys")
    broken(lambda r: r.pop("edits"), "lacks")
    broken(lambda r: r.update(edits=[]), "1..64")
    broken(lambda r: r["edits"][0].update(part=4), "0..3")
    broken(lambda r: r["edits"][0].update(appearance=8), "0..7")
    broken(lambda r: r["edits"][0].update(alpha=float("inf")), "finite")
    broken(lambda r: r["edits"][0].update(alpha="1"), "finite")
    broken(lambda r: r["edits"][0].update(mask=[[0.0] * 8] * 8), "exactly one")
    broken(lambda r: r["edits"][1].update(mask=[[2.0] * 8] * 8), r"\[0, 1\]")
    broken(lambda r: r["edits"][1].update(mask=[[0.0] * 7] * 8), "8 rows of 8")
    broken(lambda r: r["factors"].update(sha256="xyz"), "hex")
    broken(lambda r: r.update(truncation=0), r"\(0, 1\]")
    p = tmp_path / "nan.json"
    p.write_text(recipe.dumps(good).replace("2.5", "NaN"))
    with pytest.raises(recipe.RecipeError, match="finite"):
        recipe.load(str(p))


def test_serve_warns_off_loopback_and_fails_in_one_line(tmp_path, capsys):
    from panda_jax.app.cli import main

    assert main(["serve", "--host", "0.0.0.0", "--factors", str(tmp_path / "none.npz")]) == 2
    err = capsys.readouterr().err
    assert "warning: serving on 0.0.0.0" in err and "does not exist" in err.splitlines()[-1]
