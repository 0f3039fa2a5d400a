"""The editor's HTTP server: the standard library's ``ThreadingHTTPServer``, JSON endpoints and
one static page (``static/``, package data).

Endpoints (bodies are JSON objects unless said otherwise; every error is ``{"error": "..."}``
with a 4xx/5xx status, and the server keeps serving):

``GET  /``, ``/app.js``, ``/style.css``   the page (a fixed list: no path names a file)
``GET  /api/info``                        model, layer, ranks, alpha range, limits, compile counts
``POST /api/sample``   {sample, refine}   the original image and the part maps (labels per pixel)
``POST /api/edit``     {sample, refine, edits}                 the edited image (+ ROIR per edit)
``POST /api/gallery``  {sample, refine, edits, target, page?}  every appearance at edit target's region
``POST /api/saliency`` {sample, refine, edits, appearance}     heat map, mask, background removed
``POST /api/mask``     {width, height, data}  a brushed mask (bytes, base64) -> the feature grid
``POST /api/latent``   raw ``.npy`` bytes     an uploaded latent -> its id (``allow_pickle=False``)
``POST /api/compare``  {sample, refine, edits, target, alphas?} PandA beside GANSpace, SeFa, ReSeFa
``POST /api/export/png``    {sample, refine, edits}            ``image/png`` download
``POST /api/export/gif``    {..., target, frames?}             ``image/gif``: edit target's alpha swept
``POST /api/export/recipe`` {sample, refine, edits}            the recipe for ``panda-jax edit --recipe``

Requests are size-limited and need a ``Content-Length``; on a loopback address, requests whose
``Host`` is not the loopback name (DNS rebinding) and cross-origin posts are refused.
"""

from __future__ import annotations

import http.server
import ipaddress
import json
import socket
import sys
import time
import traceback
from importlib import resources

from panda_jax.errors import PandaError

from . import protocol
from .state import RequestError

MAX_JSON_BYTES = 4 << 20
DRAIN_FACTOR = 4  # over-size bodies up to this many times the limit are read before the 413
STATIC = {  # URL path -> (file in static/, content type); nothing else is served
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'")


def load_static() -> dict:
    files = resources.files("panda_jax.app.editor") / "static"
    return {path: (files.joinpath(name).read_bytes(), ctype) for path, (name, ctype) in STATIC.items()}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class EditorServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, engine, quiet: bool = True):
        self.engine = engine
        self.static = load_static()
        self.quiet = quiet
        self.loopback = is_loopback(address[0])
        super().__init__(address, Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}/"


class Handler(http.server.BaseHTTPRequestHandler):
    server: EditorServer
    protocol_version = "HTTP/1.1"
    server_version = "panda-jax-editor"
    sys_version = ""

    # ---- plumbing -----------------------------------------------------------------------------
    def setup(self):
        super().setup()
        # Headers and body go out in two writes: without this, Nagle's algorithm holds the body
        # until the client's delayed ACK (40 ms) on a kept-alive connection.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, fmt, *args):
        if not self.server.quiet:
            sys.stderr.write("%s - %s\n" % (self.address_string(), fmt % args))

    def _send(self, status: int, body: bytes, ctype: str, headers: dict | None = None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("Referrer-Policy", "no-referrer")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj, status: int = 200):
        self._send(status, json.dumps(obj, allow_nan=False).encode("utf-8"), "application/json; charset=utf-8")

    def _error(self, status: int, message: str):
        self.close_connection = True  # the body may be unread: never reuse this connection
        self._json({"error": " ".join(str(message).split())}, status)

    def _host_ok(self) -> bool:
        """On a loopback address, only loopback names in ``Host`` (no DNS rebinding) and no
        cross-origin posts."""
        if not self.server.loopback:
            return True
        host = self.headers.get("Host", "")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if not is_loopback(name):
            self._error(403, f"Host {host!r} refused: the editor answers to localhost / 127.0.0.1 only")
            return False
        origin = self.headers.get("Origin")
        if origin and origin != "null":
            oname = origin.split("://", 1)[-1].rsplit(":", 1)[0]
            if not is_loopback(oname):
                self._error(403, f"cross-origin request from {origin!r} refused")
                return False
        return True

    def _body(self, limit: int) -> bytes:
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding"):
            raise RequestError("chunked requests are not accepted; send a Content-Length", 411)
        if length is None:
            raise RequestError("the request needs a Content-Length", 411)
        try:
            n = int(length)
        except ValueError:
            raise RequestError(f"bad Content-Length {length!r}") from None
        if n < 0:
            raise RequestError(f"bad Content-Length {length!r}")
        if n > limit:
            # A body a few times the limit is read and dropped first, so that the client, still
            # sending, gets the message rather than a reset connection; a larger one is refused
            # from its Content-Length alone, unread.
            if n <= DRAIN_FACTOR * limit:
                left = n
                while left > 0:
                    got = self.rfile.read(min(left, 1 << 16))
                    if not got:
                        break
                    left -= len(got)
            raise RequestError(f"the request is {n} bytes; at most {limit} are accepted here", 413)
        return self.rfile.read(n)

    def _path(self) -> str:
        return self.path.split("?", 1)[0]

    # ---- methods ------------------------------------------------------------------------------
    def do_GET(self):
        if not self._host_ok():
            return
        path = self._path()
        if path in self.server.static:
            body, ctype = self.server.static[path]
            return self._send(200, body, ctype)
        if path == "/api/info":
            return self._guard(lambda: self._json(self.server.engine.describe()))
        if path == "/favicon.ico":
            return self._send(204, b"", "image/x-icon")
        self._error(404, f"no such page {path!r}")

    do_HEAD = do_GET

    def do_POST(self):
        if not self._host_ok():
            return
        route = ROUTES.get(self._path())
        if route is None:
            return self._error(404, f"no such endpoint {self._path()!r}")
        self._guard(lambda: route(self))

    def _other(self):
        self._error(405, f"method {self.command} is not allowed")

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _other

    def _guard(self, fn):
        try:
            fn()
        except RequestError as e:
            self._error(e.status, str(e))
        except PandaError as e:
            self._error(400, str(e))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:  # a bug: say so, keep serving
            traceback.print_exc(file=sys.stderr)
            self._error(500, f"internal error ({type(e).__name__}: {e}); the server keeps serving")

    def _state_body(self, extra=frozenset()):
        obj = protocol.parse_json(self._body(MAX_JSON_BYTES))
        return obj, protocol.parse_state(self.server.engine, obj, extra)

    # ---- endpoints ----------------------------------------------------------------------------
    def api_sample(self):
        eng = self.server.engine
        t = time.perf_counter()
        obj = protocol.parse_json(self._body(MAX_JSON_BYTES))
        protocol.check_keys(obj, {"sample", "refine", "edits"}, "the request")
        ref = protocol.parse_sample(eng, obj.get("sample"))
        refine = protocol.boolean(obj.get("refine", False), "refine")
        s = eng.sample(ref)
        labels, maps = eng.display_maps(eng.parts(ref, refine))
        self._json({"image": protocol.data_url(s.image_u8), **protocol.maps_payload(eng, labels, maps),
                    "ms": 1e3 * (time.perf_counter() - t)})

    def api_edit(self):
        eng = self.server.engine
        t = time.perf_counter()
        _, st = self._state_body()
        s, img, _ = eng.edit(st)
        out = {"image": protocol.data_url(img)}
        parts = eng.parts(st.sample, st.refine)
        out["roir"] = [eng.roir(eng.region(e, parts), s.image_u8, img) if e.alpha else None for e in st.edits]
        out["ms"] = 1e3 * (time.perf_counter() - t)
        self._json(out)

    def api_gallery(self):
        eng = self.server.engine
        t = time.perf_counter()
        obj, st = self._state_body({"target", "page"})
        target = protocol.integer(obj.get("target", 0), "target", 0, max(0, len(st.edits) - 1))
        pages = -(-eng.rank_c // eng.gallery)
        page = protocol.integer(obj.get("page", 0), "page", 0, pages - 1)
        apps, imgs, alpha = eng.gallery_images(st, target, page)
        self._json({"appearances": apps, "images": [protocol.data_url(i) for i in imgs], "alpha": alpha,
                    "page": page, "pages": pages, "ms": 1e3 * (time.perf_counter() - t)})

    def api_saliency(self):
        eng = self.server.engine
        obj, st = self._state_body({"appearance"})
        j = protocol.integer(obj.get("appearance", 0), "appearance", 0, eng.rank_c - 1)
        t = time.perf_counter()
        sal, masks, nobg, img = eng.saliency(st)
        self._json({**protocol.saliency_images(eng, img, sal, masks, nobg, j), "appearance": j,
                    "background_appearance": eng.background, "ms": 1e3 * (time.perf_counter() - t)})

    def api_mask(self):
        eng = self.server.engine
        m = protocol.parse_brush(eng, protocol.parse_json(self._body(MAX_JSON_BYTES)))
        grid = eng.brush_to_grid(m)
        self._json({"mask": [[round(float(v), 4) for v in row] for row in grid]})

    def api_latent(self):
        eng = self.server.engine
        z = protocol.parse_latent(eng, self._body(protocol.MAX_LATENT_BYTES))
        self._json({"latent": eng.add_latent(z)})

    def api_compare(self):
        from . import compare

        obj, st = self._state_body({"target", "alphas"})
        self._json(compare.compare(self.server.engine, st, obj))

    def api_export_png(self):
        _, st = self._state_body()
        _, img, _ = self.server.engine.edit(st)
        self._send(200, protocol.png_bytes(img), "image/png",
                   {"Content-Disposition": 'attachment; filename="panda-edit.png"'})

    def api_export_gif(self):
        eng = self.server.engine
        obj, st = self._state_body({"target", "frames"})
        if not st.edits:
            raise RequestError("the stack is empty; add an edit to sweep")
        target = protocol.integer(obj.get("target", 0), "target", 0, len(st.edits) - 1)
        frames = protocol.integer(obj.get("frames", 15), "frames", 3, 61)
        fr = eng.sweep(st, target, frames)
        self._send(200, protocol.gif_bytes(fr, scale=2 if eng.H <= 128 else 1), "image/gif",
                   {"Content-Disposition": 'attachment; filename="panda-sweep.gif"'})

    def api_export_recipe(self):
        from .. import recipe

        _, st = self._state_body()
        body = recipe.dumps(protocol.recipe_for(self.server.engine, st)).encode("utf-8")
        self._send(200, body, "application/json; charset=utf-8",
                   {"Content-Disposition": 'attachment; filename="panda-recipe.json"'})


ROUTES = {
    "/api/sample": Handler.api_sample,
    "/api/edit": Handler.api_edit,
    "/api/gallery": Handler.api_gallery,
    "/api/saliency": Handler.api_saliency,
    "/api/mask": Handler.api_mask,
    "/api/latent": Handler.api_latent,
    "/api/compare": Handler.api_compare,
    "/api/export/png": Handler.api_export_png,
    "/api/export/gif": Handler.api_export_gif,
    "/api/export/recipe": Handler.api_export_recipe,
}


def make_server(engine, host: str = "127.0.0.1", port: int = 0, quiet: bool = True) -> EditorServer:
    return EditorServer((host, port), engine, quiet=quiet)
