"""The browser editor behind ``panda-jax serve``: a local web page over a JSON API.

- :mod:`.state` the checked request types (a sample, an edit stack);
- :mod:`.engine` the generator, the factors and the compiled functions (fixed shapes, compiled
  once at start), the sample cache and the edit stack;
- :mod:`.protocol` request parsing (strict) and image encoding;
- :mod:`.server` the HTTP server (standard library) and its endpoints;
- :mod:`.cache` factors fitted at first start, cached by model, layer and fit settings;
- :mod:`.compare` PandA's edit beside GANSpace, SeFa and ReSeFa with ROIR;
- ``static/`` the page: one HTML file, vanilla JavaScript and CSS, no external asset.
"""

from .engine import Engine, compilations
from .state import RequestError
from .server import make_server

__all__ = ["Engine", "RequestError", "compilations", "make_server"]
