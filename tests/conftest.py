import os
import tempfile

# The command's caches (converted default model, compiled programs) go to a folder of the test
# session, for this process and the commands it starts, never the user's home.
os.environ.setdefault("PANDA_JAX_CACHE", tempfile.mkdtemp(prefix="panda-jax-test-cache-"))

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_default_matmul_precision", "highest")

HERE = os.path.dirname(os.path.abspath(__file__))
TESTVECTORS = os.environ.get(
    "PANDA_TESTVECTORS", os.path.normpath(os.path.join(HERE, "..", "..", "shared", "testvectors"))
)


@pytest.fixture(scope="session")
def testvectors():
    if not os.path.isdir(TESTVECTORS):
        pytest.fail(f"test vectors not found at {TESTVECTORS}; set PANDA_TESTVECTORS")
    return TESTVECTORS


# ---- the editor (panda-jax serve) as a subprocess, shared by test_editor*.py -----------------

EDITOR_ARGS = ("--samples", "16", "--steps", "10", "--ranks", "8", "4", "--refine-steps", "10",
               "--ganspace-samples", "256", "--port", "0")


class EditorProcess:
    """``panda-jax serve`` on a free port: its URL once ready (``found``: what ``until`` captured),
    and everything it printed."""

    def __init__(self, args, env, timeout=240, until=r"ready in [0-9.]+ s: (http://\S+)"):
        import re
        import subprocess
        import sys
        import threading
        import time

        exe = os.path.join(os.path.dirname(sys.executable), "panda-jax")
        cmd = [exe] if os.path.exists(exe) else [sys.executable, "-m", "panda_jax.app.cli"]
        self.proc = subprocess.Popen(cmd + ["serve", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env=env)
        self.lines, self.found = [], None
        ready = threading.Event()

        def drain():
            for line in self.proc.stdout:
                self.lines.append(line.rstrip("\n"))
                m = re.search(until, line)
                if m and self.found is None:
                    self.found = m.group(1)
                    ready.set()
            ready.set()

        threading.Thread(target=drain, daemon=True).start()
        t0 = time.perf_counter()
        ready.wait(timeout)
        self.start_seconds = time.perf_counter() - t0
        self.url = self.found
        if self.found is None:
            self.stop()
            raise RuntimeError("panda-jax serve did not start:\n" + self.output)
        self.lines_at_start = list(self.lines)

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except Exception:
                self.proc.kill()


@pytest.fixture(scope="session")
def editor_cache():
    """The session's cache folder (shared with the other commands: converted model, compiled
    programs); no other test fits factors into it."""
    import pathlib

    return pathlib.Path(os.environ["PANDA_JAX_CACHE"])


@pytest.fixture(scope="session")
def editor(editor_cache):
    """The editor on the embedded DCGAN, with small fit settings."""
    pytest.importorskip("torch")
    p = EditorProcess(EDITOR_ARGS, dict(os.environ))
    yield p
    p.stop()


@pytest.fixture(scope="session")
def editor_reference(editor):
    """The same generator and factors in this process, to check the editor's images."""
    import json
    import urllib.request

    import panda_jax as pj
    from panda_jax.app import pipeline

    info = json.load(urllib.request.urlopen(editor.url + "api/info", timeout=30))
    return pipeline.load_model("default"), pj.load_factors(info["factors_file"]), info


# The longest files start first, so that with the suite split over workers (pytest-xdist
# --dist loadfile) none of them is left running alone at the end.
LONG_FILES = ("test_benchmarks.py", "test_locality.py", "test_cli_families.py", "test_editor.py",
              "test_editor_browser.py", "test_fit_loop.py", "test_cli.py")


def pytest_collection_modifyitems(config, items):
    def rank(item):
        name = os.path.basename(str(item.fspath))
        return LONG_FILES.index(name) if name in LONG_FILES else len(LONG_FILES)

    items.sort(key=rank)  # stable: the order within each file is kept
