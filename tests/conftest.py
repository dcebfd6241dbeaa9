import atexit
import os
import shutil
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

# JAX's persistent compilation cache, one folder per test process (no two processes write one):
# the suite compiles the same programs again and again (every test builds its own learner, and
# the fixture below drops compiled programs now and then), and a cached executable loads in a
# fraction of its compile time. Results do not change; the folder is removed at exit.
_XLA_CACHE = tempfile.mkdtemp(prefix="dal_jax_test_xla_cache_")
atexit.register(shutil.rmtree, _XLA_CACHE, ignore_errors=True)
jax.config.update("jax_compilation_cache_dir", _XLA_CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def random_log_probs(rng: np.random.Generator, s: int, n: int, c: int, *, sharp: float = 2.0):
  """Fresh random log-probabilities [S, N, C] (float64), with a range of confidences."""
  logits = rng.normal(size=(s, n, c)) * rng.uniform(0.1, sharp, size=(1, n, 1))
  return logits - np.log(np.sum(np.exp(logits), axis=-1, keepdims=True))


@pytest.fixture
def rng(request):
  # A fresh, reproducible stream per test.
  return np.random.default_rng(abs(hash(request.node.nodeid)) % 2**32)


@pytest.fixture(scope="session")
def splits():
  """The tiny digits splits of ``tests.test_loop.tiny_config``."""
  from dal_jax import experiment
  from tests.test_loop import tiny_config
  return experiment.load_splits(tiny_config())


@pytest.fixture(autouse=True)
def _release_compiled_programs():
  """After each test, JAX's compiled programs are dropped once the worker holds many memory
  mappings (:func:`dal_jax.experiment.release_compiled_programs`): a pytest worker compiles
  thousands of programs over the suite, and one reached Linux's 65,530 mappings per process
  (44,711 three fifths of the way through its share), where a compile's mmap failed and XLA
  crashed the worker with a segmentation fault."""
  yield
  from dal_jax import experiment
  experiment.release_compiled_programs(0.25)
