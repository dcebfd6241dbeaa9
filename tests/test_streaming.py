"""Pools on disk read and scored chunk by chunk (``dal_jax.streaming``)."""

import os

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


def test_views_read_nothing_until_asked_and_float_pools_round_trip(tmp_path):
  x = np.random.default_rng(4).random((50, 3, 3, 2)).astype(np.float32)
  path = str(tmp_path / "f")
  streaming.write_pool(path, [x[:20], x[20:]], shape=(3, 3, 2), dtype="float32",
                       meta={"digest": "d"})
  pool = streaming.RecordPool(path)
  assert pool.shape == (50, 3, 3, 2) and pool.meta["digest"] == "d"
  view = pool[np.array([[3, 7], [7, 49]])][:, 1:]  # indexing composes positions
  assert isinstance(view, streaming.Rows) and view.shape == (2, 1, 3, 3, 2)
  np.testing.assert_array_equal(view.numpy(), x[np.array([[7], [49]])])
  np.testing.assert_array_equal(np.asarray(pool[10:13]), x[10:13])  # float32 kept exactly
  assert pool[[]].numpy().shape == (0, 3, 3, 2)
  with pytest.raises(ValueError, match="pool chunks must be uint8"):
    streaming.write_pool(path + "2", [x], shape=(3, 3, 2))
  with pytest.raises(ValueError, match="dtype must be one of"):
    streaming.write_pool(path + "3", [x], shape=(3, 3, 2), dtype="float16")


def _records(workdir):
  import json
  with open(os.path.join(workdir, "seed_0", "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


@pytest.mark.parametrize("overrides", [
    {"acquisition": "bald"},
    {"acquisition": "badge", "pool_subsample": 120, "cold_start": "kmeans"}])
def test_a_run_with_its_pool_on_disk_equals_the_run_in_memory(tmp_path, overrides,
                                                              monkeypatch):
  from dal_jax import experiment
  from dal_jax import loop
  from tests.test_loop import tiny_config

  chunked = []  # score acquisitions on disk are scored chunk by chunk; batch methods are not
  by_chunk = loop._scores_by_chunk
  monkeypatch.setattr(loop, "_scores_by_chunk",
                      lambda *a, **k: chunked.append(1) or by_chunk(*a, **k))
  runs = {}
  for on_disk in (False, True):
    cfg = tiny_config(pool_on_disk=on_disk, budget=20, **overrides)
    workdir = str(tmp_path / str(on_disk))
    experiment.run_experiment(cfg, workdir)
    runs[on_disk] = _records(workdir)
    assert bool(chunked) == (on_disk and overrides["acquisition"] == "bald")
  assert [(r["selected"], r["accuracy"]) for r in runs[True]] == [
      (r["selected"], r["accuracy"]) for r in runs[False]] and len(runs[True]) == 3
  # The disagreement diagnostic is summed chunk by chunk on disk: equal up to rounding.
  for a, b in zip(runs[True], runs[False]):
    assert (a.get("pool_bald") is None) == (b.get("pool_bald") is None)
    if a.get("pool_bald") is not None:
      assert a["pool_bald"] == pytest.approx(b["pool_bald"], rel=1e-5)
  assert sorted(os.listdir(tmp_path / "True")) == sorted(
      os.listdir(tmp_path / "False") + ["pool.array_record", "pool.json"])
  # Resuming reuses the pool file (its digest matches the pool).
  before = os.path.getmtime(tmp_path / "True" / "pool.array_record")
  experiment.run_experiment(tiny_config(pool_on_disk=True, budget=20, **overrides),
                            str(tmp_path / "True"))
  assert os.path.getmtime(tmp_path / "True" / "pool.array_record") == before


@pytest.mark.parametrize("method,needs", [("ceal", "ceal"), ("fixmatch", "fixmatch")])
def test_methods_that_need_every_pool_input_at_once_are_refused_on_disk(tmp_path, method,
                                                                         needs):
  from dal_jax import experiment
  from tests.test_loop import tiny_config

  cfg = tiny_config(pool_on_disk=True, acquisition="entropy", add_methods=method)
  with pytest.raises(ValueError, match=rf"\({needs}\) uses every pool input at once, so it does "
                     r"not run on a pool on disk; use a pool in memory"):
    experiment.run_experiment(cfg, str(tmp_path))
