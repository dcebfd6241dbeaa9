"""CEAL pseudo-labels: thresholds against NumPy, the decay schedule, and a loop run using them."""

import jax.numpy as jnp
import numpy as np
import pytest

from dal_jax import experiment
from dal_jax import semi
from tests.conftest import random_log_probs
from tests.test_loop import tiny_config


def test_pseudo_labels_match_reference(rng):
  lp = random_log_probs(rng, 4, 200, 5, sharp=6.0)
  where = rng.random(200) < 0.7
  p = np.exp(lp).mean(0)
  entropy = -(p * np.log(p)).sum(1)
  delta = float(np.quantile(entropy, 0.3))
  mask, labels = semi.pseudo_labels(jnp.asarray(lp, jnp.float32), threshold=delta,
                                    where=jnp.asarray(where))
  expected = (entropy < delta) & where
  near = np.abs(entropy - delta) < 1e-5  # float32 round-off at the threshold
  np.testing.assert_array_equal(np.asarray(mask)[~near], expected[~near])
  np.testing.assert_array_equal(labels, p.argmax(1))
  assert 0 < int(mask.sum()) < int(where.sum())
  with pytest.raises(ValueError, match=">= 0"):
    semi.pseudo_labels(jnp.asarray(lp), threshold=-0.1)


def test_threshold_decays_to_zero():
  cfg = semi.CEAL(delta0=0.05, decay=0.02)
  assert [semi.ceal_threshold(cfg, r) for r in range(4)] == pytest.approx([0.05, 0.03, 0.01, 0.0])


def test_loop_with_ceal(tmp_path, splits):
  cfg = tiny_config(acquisition="entropy", add_methods="ceal")
  cfg.methods.ceal.delta0, cfg.methods.ceal.decay = 3.0, 0.0  # > log 10: every point
  records = experiment.run_experiment(cfg, str(tmp_path), splits=splits)[cfg.seed]
  unlabeled = [300 - r["num_labels"] for r in records]
  assert [r["num_pseudo_labels"] for r in records] == unlabeled
  cfg_off = tiny_config(acquisition="entropy")
  off = experiment.run_experiment(cfg_off, str(tmp_path / "off"), splits=splits)[cfg.seed]
  assert "num_pseudo_labels" not in off[0]
  with pytest.raises(ValueError, match="ceal needs delta0 > 0"):
    bad = tiny_config(add_methods="ceal")
    bad.methods.ceal.delta0 = 0.0
    experiment.run_experiment(bad, str(tmp_path / "x"), splits=splits)
  with pytest.raises(ValueError, match="'ceal' only changes training"):
    experiment.run_experiment(tiny_config(acquisition="ceal"), str(tmp_path / "y"), splits=splits)


def test_ceal_with_parallel_seeds_equals_sequential_seeds(tmp_path, splits):
  cfg = tiny_config(acquisition="margin", add_methods="ceal", num_seeds=2, budget=20)
  cfg.methods.ceal.delta0 = 0.5
  seq = experiment.run_experiment(cfg, str(tmp_path / "seq"), splits=splits)
  cfg.parallel_seeds = True
  par = experiment.run_experiment(cfg, str(tmp_path / "par"), splits=splits)
  for seed in seq:
    assert [r["selected"] for r in par[seed]] == [r["selected"] for r in seq[seed]]
    assert [r["num_pseudo_labels"] for r in par[seed]] == [
        r["num_pseudo_labels"] for r in seq[seed]]
