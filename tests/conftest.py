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
