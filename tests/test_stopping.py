"""Stopping by stabilizing predictions: kappa against hand computations, the window rule, and
the loop stopping (and resuming) on it."""

import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from dal_jax import experiment
from dal_jax import stopping
from tests.test_loop import tiny_config


def test_kappa_hand_computation():
  a = jnp.array([0, 0, 1, 1, 2, 2, 0, 1])
  b = jnp.array([0, 1, 1, 1, 2, 0, 0, 1])
  # p_o = 6/8; f_a = (3, 3, 2)/8, f_b = (3, 4, 1)/8; p_e = (9 + 12 + 2)/64 = 23/64.
  p_o, p_e = 6 / 8, 23 / 64
  np.testing.assert_allclose(stopping.cohens_kappa(a, b, 3), (p_o - p_e) / (1 - p_e), rtol=1e-6)
  np.testing.assert_allclose(stopping.cohens_kappa(a, a, 3), 1.0)
  assert float(stopping.cohens_kappa(jnp.zeros(5, int), jnp.zeros(5, int), 3)) == 1.0


def test_kappa_matches_sklearn(rng):
  for _ in range(5):
    a = rng.integers(0, 4, 200)
    b = np.where(rng.random(200) < 0.7, a, rng.integers(0, 4, 200))
    np.testing.assert_allclose(stopping.cohens_kappa(jnp.asarray(a), jnp.asarray(b), 4),
                               cohen_kappa_score(a, b), rtol=1e-5)
  with pytest.raises(ValueError, match="non-empty"):
    stopping.cohens_kappa(jnp.zeros(3, int), jnp.zeros(4, int), 2)


def test_window_rule():
  w = jnp.full((3,), jnp.nan)
  for k in (0.995, 0.999):
    w = stopping.update_window(w, jnp.float32(k))
    assert not stopping.should_stop(w, 0.99)  # window not full yet
  w = stopping.update_window(w, jnp.float32(0.98))
  np.testing.assert_allclose(w, [0.995, 0.999, 0.98], rtol=1e-6)
  assert stopping.should_stop(w, 0.99) == (np.mean([0.995, 0.999, 0.98]) >= 0.99)
  assert not stopping.should_stop(stopping.update_window(w, jnp.float32(0.5)), 0.99)


def test_loop_stops_on_stabilizing_predictions_and_resumes(tmp_path, splits):
  cfg = tiny_config(acquisition="entropy", budget=60, stabilizing_stop_set=50,
                    stabilizing_window=2, stabilizing_threshold=-1.0, stop_on_stabilizing=True)
  full = experiment.run_experiment(cfg, str(tmp_path / "a"), splits=splits)[cfg.seed]
  # Round 0 has no previous model; rounds 1 and 2 fill the window of 2 -> stop at round 2.
  assert [r["stop"] for r in full] == [None, None, "stabilizing_predictions"]
  assert full[0]["kappa"] is None and -1 <= full[1]["kappa"] <= 1
  experiment.run_experiment(cfg, str(tmp_path / "b"), splits=splits, max_rounds=1)
  resumed = experiment.run_experiment(cfg, str(tmp_path / "b"), splits=splits)[cfg.seed]
  assert [r["kappa"] for r in resumed] == pytest.approx([r["kappa"] for r in full], nan_ok=True)
  # Recording only: the rule fires in the metrics while the run goes on to its budget.
  cfg2 = tiny_config(acquisition="entropy", stabilizing_stop_set=50, stabilizing_window=2,
                     stabilizing_threshold=-1.0)
  rec = experiment.run_experiment(cfg2, str(tmp_path / "c"), splits=splits)[cfg2.seed]
  assert rec[-1]["stop"] == "budget" and rec[2]["stabilized"]


def test_stabilizing_stop_replays_the_rule_on_recorded_kappas():
  from dal_jax import analysis
  kappas = [None, 0.5, 0.9, 0.95, 1.0]
  records = [{"round": i, "num_labels": 10 * (i + 1), "accuracy": 0.1 * i, "kappa": k}
             for i, k in enumerate(kappas)]
  assert analysis.stabilizing_stop(records, window=2, threshold=0.9) == {
      "round": 3, "num_labels": 40, "accuracy": pytest.approx(0.3)}
  assert analysis.stabilizing_stop(records, window=3, threshold=0.99) is None
  rows = analysis.summarize({"a": {0: [dict(r, selected_class_histogram=[1]) for r in records]}},
                            target=0.2, stabilizing_window=2, stabilizing_thresholds=(0.9, 0.99))
  table = analysis.format_table(rows)
  assert "40 labels, acc 0.3000 (1/1 seeds)" in table and "never" in table
