"""Pools on disk read and scored chunk by chunk (``dal_jax.streaming``)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dal_jax import acquisition as acq
from dal_jax import learner as learner_lib
from dal_jax import models
from dal_jax import streaming


def _pool(tmp_path, n=300, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.integers(0, 256, (n, 8, 8, 1), dtype=np.uint8)
  path = str(tmp_path / "pool")
  assert streaming.write_pool(path, (x[i:i + 70] for i in range(0, n, 70)),
                              shape=(8, 8, 1)) == n
  return x, streaming.RecordPool(path)


def test_records_read_back_by_index_and_in_chunks(tmp_path):
  x, pool = _pool(tmp_path)
  assert len(pool) == 300
  idx = np.random.default_rng(1).permutation(300)[:17]
  np.testing.assert_array_equal(pool.read(idx), x[idx].astype(np.float32) / 255.0)
  starts = [s for s, c in pool.chunks(128)]
  assert starts == [0, 128, 256]
  np.testing.assert_array_equal(np.concatenate([c for _, c in pool.chunks(128)]),
                                x.astype(np.float32) / 255.0)
  with pytest.raises(ValueError, match=r"item indices must be in \[0, 300\)"):
    pool.read([300])


def test_streamed_scores_equal_scoring_the_whole_pool_in_memory(tmp_path):
  x, pool = _pool(tmp_path)
  model = models.get_model("mlp", (8, 8, 1), 4, hidden=(16,))
  learner = learner_lib.Learner(model=model, chunk_size=64)
  variables = learner.init(jax.random.split(jax.random.key(0), 2), jnp.zeros((1, 8, 8, 1)))
  where = np.random.default_rng(2).random(300) > 0.3
  got = streaming.stream_scores(learner, variables, pool, acq.entropy, where=where,
                                chunk_size=90)
  lp = learner.predict(variables, jnp.asarray(x, jnp.float32) / 255.0).log_probs
  lp = np.asarray(lp, np.float64).reshape(-1, 300, 4)  # [M, n, C]: two deterministic models
  mean = np.log(np.mean(np.exp(lp), axis=0))
  want = -(np.exp(mean) * mean).sum(-1)
  np.testing.assert_allclose(got[where], want[where], rtol=1e-4, atol=1e-5)
  assert np.isneginf(got[~where]).all()
  # MC dropout: same key, same scores; BALD is >= 0 on candidates.
  a = streaming.stream_scores(learner, variables, pool, acq.bald, where=where,
                              key=jax.random.key(3), mc_samples=4, chunk_size=90)
  b = streaming.stream_scores(learner, variables, pool, acq.bald, where=where,
                              key=jax.random.key(3), mc_samples=4, chunk_size=90)
  np.testing.assert_array_equal(a, b)
  assert (a[where] >= -1e-6).all() and np.isneginf(a[~where]).all()
  picked = np.asarray(acq.top_k(jnp.asarray(a), 5))
  assert len(set(picked.tolist())) == 5 and where[picked].all()
