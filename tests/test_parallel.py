"""Ensembles and devices: stacked training equals per-member training, 8 simulated devices equal
1 device, ensemble averaging in probability space."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

from dal_jax import learner as learner_lib
from tests.conftest import random_log_probs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_eight_simulated_devices_match_one():
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
         "JAX_PLATFORMS": "cpu"}
  proc = subprocess.run([sys.executable, "-m", "tests.multidevice_check"], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads([l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][0][7:])
  assert out["devices"] == 8
  assert out["layout_8"] == "members" and out["layout_2"] == "batch"
  assert "devices" in out["param_sharding_8"]
  for m in (8, 2):
    assert out[f"train_diff_sharded_vs_single_{m}"] < 1e-4
    assert out[f"train_diff_member1_vs_alone_{m}"] < 1e-4
  assert out["predict_diff"] < 1e-4
  # chunks of 96 rows over 8 devices: 12 rows per read, 256 rows read in all (none twice)
  assert out["disk_predict_diff"] == 0.0
  assert out["disk_largest_read"] == 12 and out["disk_rows_read"] == 256
  assert out["topk_sharded"] == out["topk_single"]
  assert out["runner_devices_8"] == 8 and out["runner_devices_1"] == 1
  assert out["runner_same_selection"]


def test_ensemble_log_probs_average_in_probability_space(rng):
  lp = random_log_probs(rng, 12, 30, 5)  # e.g. 3 members x 4 MC samples
  stacked = jnp.asarray(lp.reshape(3, 4, 30, 5), jnp.float32)
  flat = learner_lib.ensemble_log_probs(stacked)
  np.testing.assert_allclose(flat, lp, rtol=1e-6, atol=1e-6)
  expected = logsumexp(lp, axis=0) - np.log(12)
  np.testing.assert_allclose(learner_lib.mean_prediction(flat), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("vectorize,recipe", [
    (True, {}), (False, {}),
    (True, {"early_stopping": "nll", "min_epochs": 6.0, "decay": "l2",
            "weight_decay_scale": "inverse_n", "weight_decay": 2.0})])
def test_stacked_training_equals_members_trained_alone(vectorize, recipe):
  from dal_jax import models
  from dal_jax import predict
  from dal_jax import training
  from dal_jax.methods import fixmatch
  rng = np.random.default_rng(1)
  y = rng.integers(0, 3, 200)
  x = jnp.asarray((rng.normal(size=(3, 16))[y] * 2 + rng.normal(size=(200, 16))).reshape(
      200, 4, 4, 1), jnp.float32)
  y = jnp.asarray(y, jnp.int32)
  model = models.get_model("mlp", (4, 4, 1), 3, hidden=(16,))
  cfg = training.TrainConfig(max_steps=60, eval_every=10, patience=1, batch_size=8,
                             **{"min_steps": 0, "min_epochs": 0.0, **recipe})
  keys = jax.random.split(jax.random.key(0), 3)
  # Parallel seeds (different labeled-set sizes: their own decay and minimum steps): each model has its own labeled set; a loss term on unlabeled inputs too.
  labeled = np.zeros((3, 200), bool)
  for i in range(3):
    labeled[i, rng.choice(150, 20 + 10 * i, replace=False)] = True
  terms = (fixmatch.loss_term(1.0, 1, 0.5),)
  lrn = learner_lib.Learner(model, cfg, terms=terms, chunk_size=64, vectorize=vectorize)
  stacked = lrn.fit(x, y, labeled, keys=keys, val=(x[150:], y[150:]), unlabeled=~labeled)
  for i in range(3):
    alone = training.fit(model, x, y, labeled[i], key=keys[i], config=cfg, val=(x[150:], y[150:]),
                         terms=terms, unlabeled=~labeled[i])
    assert stacked.steps[i] == alone.steps
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a[i], b, rtol=1e-5, atol=1e-6),
                 stacked.variables, alone.variables)
  # Stacked prediction (vectorized or not) equals predicting with each model alone.
  keys_s = jax.random.split(jax.random.key(7), 3)
  out = lrn.predict(stacked.variables, x, keys=keys_s, mc_samples=3, with_pre_logits=True)
  for i in range(3):
    one = predict.predict(model, jax.tree.map(lambda v: v[i], stacked.variables["model"]), x,
                          key=keys_s[i], mc_samples=3, chunk_size=64, with_pre_logits=True)
    np.testing.assert_allclose(out.log_probs[i], one.log_probs, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.pre_logits[i], one.pre_logits, rtol=1e-5, atol=1e-5)
