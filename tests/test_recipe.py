"""The training recipe: minimum training before early stopping, the NLL criterion with the best
weights restored, and weight decay (decoupled or L2, constant or scaled by 1/n) against float64
NumPy Adam."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dal_jax import metrics
from dal_jax import models
from dal_jax import predict
from dal_jax import training


def _data(seed=0, n=240):
  rng = np.random.default_rng(seed)
  y = rng.integers(0, 3, n)
  x = (rng.normal(size=(3, 16))[y] * 1.5 + rng.normal(size=(n, 16))).reshape(n, 4, 4, 1)
  return jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32)


def test_min_train_steps_grows_with_the_labeled_set_and_is_capped():
  cfg = training.TrainConfig(batch_size=32, max_steps=500, min_steps=100, min_epochs=10.0)
  assert training.min_train_steps(cfg, 20) == 100  # ceil(10·20/32) = 7 < 100
  assert training.min_train_steps(cfg, 1000) == 313  # ceil(10·1000/32)
  assert training.min_train_steps(cfg, 10_000) == 500  # capped at max_steps
  assert training.min_train_steps(training.TrainConfig(min_steps=0, min_epochs=0.0), 10_000) == 0


def test_early_stopping_waits_for_the_minimum():
  x, y = _data()
  m = models.get_model("mlp", (4, 4, 1), 3, hidden=(16,))
  labeled = np.isin(np.asarray(y), [0, 1]) & (np.arange(240) < 150)
  # Validation labels the model never sees: accuracy stays flat, so patience 1 stops at once.
  val = (x[150:], jnp.full((90,), 2, jnp.int32))
  base = training.TrainConfig(max_steps=200, eval_every=4, patience=1, batch_size=8,
                              min_steps=0, min_epochs=0.0)
  quick = training.fit(m, x, y, labeled, key=jax.random.key(0), config=base, val=val)
  assert quick.steps <= 12
  held = training.fit(m, x, y, labeled, key=jax.random.key(0),
                      config=base._replace(min_steps=40), val=val)
  assert held.steps == 40
  n = int(labeled.sum())
  by_epochs = training.fit(m, x, y, labeled, key=jax.random.key(0),
                           config=base._replace(min_epochs=3.0), val=val)
  want = -(-3 * n // 8)  # ceil(3 epochs · n / batch 8)
  assert want > 12 and by_epochs.steps == -(-want // 4) * 4  # the first evaluation after it


@pytest.mark.parametrize("criterion", ["nll", "accuracy"])
def test_restored_weights_are_the_best_by_the_criterion(criterion):
  x, y = _data(seed=1)
  m = models.get_model("mlp", (4, 4, 1), 3, hidden=(16,))
  labeled = np.arange(240) < 30
  val = (x[120:], y[120:])
  cfg = training.TrainConfig(max_steps=60, eval_every=6, patience=100, batch_size=8,
                             learning_rate=3e-2, early_stopping=criterion)
  # Training is a deterministic prefix: fit without validation for t steps = the state at t.
  scores = []
  for t in range(6, 61, 6):
    v = training.fit(m, x, y, labeled, key=jax.random.key(3),
                     config=cfg._replace(max_steps=t)).variables
    lp = predict.predict(m, v["model"], val[0]).log_probs[0]
    scores.append(float(training.validation_score(lp, val[1], criterion)))
  best = training.fit(m, x, y, labeled, key=jax.random.key(3), config=cfg, val=val)
  lp = predict.predict(m, best.variables["model"], val[0]).log_probs[0]
  got = float(training.validation_score(lp, val[1], criterion))
  assert got == pytest.approx(max(scores), abs=1e-6)
  assert best.best_val_accuracy == pytest.approx(float(metrics.accuracy(lp, val[1])), abs=1e-7)
  if criterion == "nll":
    assert got == pytest.approx(-float(metrics.nll(lp, val[1])), abs=1e-6)


def _adam_steps_np(w, grads, *, lr, l2, decoupled, b1=0.9, b2=0.999, eps=1e-8):
  w = np.array(w, np.float64)
  m = np.zeros_like(w)
  v = np.zeros_like(w)
  for t, g in enumerate(grads, start=1):
    g = g + l2 * w
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    mhat, vhat = m / (1 - b1 ** t), v / (1 - b2 ** t)
    w = w - lr * (mhat / (np.sqrt(vhat) + eps) + decoupled * w)
  return w


@pytest.mark.parametrize("decay,scale", [("decoupled", "constant"), ("decoupled", "inverse_n"),
                                         ("l2", "constant"), ("l2", "inverse_n")])
def test_weight_decay_matches_numpy_adam(decay, scale):
  rng = np.random.default_rng(7)
  w0 = rng.normal(size=5)
  grads = rng.normal(size=(4, 5))
  n, lam = 25, 3.0
  cfg = training.TrainConfig(learning_rate=0.05, weight_decay=lam, decay=decay,
                             weight_decay_scale=scale)
  eff = lam / n if scale == "inverse_n" else lam
  assert float(training.effective_weight_decay(cfg, n)) == pytest.approx(eff, rel=1e-6)
  tx = training.make_optimizer(cfg)
  variables = {"model": {"params": {"w": jnp.asarray(w0, jnp.float32)}}, "terms": ()}
  state = training.init_train_state(variables, tx, config=cfg, n_labeled=n)
  params, opt = {"params": variables["model"]["params"], "terms": ()}, state.opt_state
  for g in grads:
    upd, opt = tx.update({"params": {"w": jnp.asarray(g, jnp.float32)}, "terms": ()}, opt,
                         params)
    params = jax.tree.map(lambda p, u: p + u, params, upd)
  want = _adam_steps_np(w0, grads, lr=0.05, l2=eff if decay == "l2" else 0.0,
                        decoupled=eff if decay == "decoupled" else 0.0)
  np.testing.assert_allclose(np.asarray(params["params"]["w"]), want, rtol=2e-5, atol=2e-6)


def test_scaled_decay_needs_the_labeled_count_and_bad_recipes_are_refused():
  cfg = training.TrainConfig(decay="l2", weight_decay_scale="inverse_n")
  tx = training.make_optimizer(cfg)
  variables = {"model": {"params": {"w": jnp.ones(2)}}, "terms": ()}
  with pytest.raises(ValueError, match="labeled-set size"):
    training.init_train_state(variables, tx)
  for bad, match in (({"early_stopping": "loss"}, "early_stopping"), ({"decay": "l1"}, "decay"),
                     ({"weight_decay_scale": "n"}, "weight_decay_scale"),
                     ({"min_steps": -1}, "min_steps"), ({"min_epochs": float("nan")},
                                                        "min_epochs")):
    with pytest.raises(ValueError, match=match):
      training.check_train_config(training.TrainConfig(**bad))


def test_library_defaults_are_the_configs():
  """One source of defaults: TrainConfig() and RoundConfig's defaults are the config's fields,
  so the library trains with the recipe the runner reports."""
  from dal_jax import config as config_lib
  from dal_jax import loop

  c = config_lib.default_config()
  assert training.TrainConfig() == training.TrainConfig(**c.train)
  rc = loop.RoundConfig(query_size=c.query_size)
  for field in ("mc_samples", "pool_subsample", "budget", "target_accuracy", "warm_start",
                "ensemble_size", "region_size", "region_shape"):
    assert getattr(rc, field) == c[field], field
