import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


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
