"""Training (fixed shapes, early stopping), chunked pool inference, metrics vs NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dal_jax import metrics
from dal_jax import models
from dal_jax import predict
from dal_jax import training


def blobs(n=300, c=3, d=(4, 4, 1), seed=0):
  rng = np.random.default_rng(seed)
  y = rng.integers(0, c, n)
  centers = rng.normal(size=(c, int(np.prod(d)))) * 3
  x = (centers[y] + rng.normal(size=(n, centers.shape[1]))).reshape(n, *d).astype(np.float32)
  return jnp.asarray(x), jnp.asarray(y, jnp.int32)


def test_fit_learns_and_uses_only_labeled_points():
  x, y = blobs()
  m = models.get_model("mlp", (4, 4, 1), 3, hidden=(32,))
  labeled = np.zeros(300, bool)
  labeled[:60] = True
  y_noisy = np.asarray(y).copy()
  y_noisy[60:] = -1  # unlabeled entries are never read
  cfg = training.TrainConfig(max_steps=200, eval_every=50, patience=10, batch_size=64,
                             min_steps=0, min_epochs=0.0)
  r = training.fit(m, x, jnp.asarray(y_noisy), labeled, key=jax.random.key(0), config=cfg,
                   val=(x[200:], y[200:]))
  acc = metrics.accuracy(predict.predict(m, r.variables["model"], x[200:]).log_probs[0],
                         y[200:])
  assert float(acc) > 0.9 and r.best_val_accuracy > 0.9


def test_growing_labeled_set_reuses_one_compiled_step():
  x, y = blobs(seed=1)
  m = models.get_model("mlp", (4, 4, 1), 3, hidden=(16,))
  cfg = training.TrainConfig(max_steps=4, eval_every=2, batch_size=8)
  training.fit(m, x, y, np.arange(300) < 10, key=jax.random.key(0), config=cfg)
  before = training.sampled_train_step._cache_size()
  for n in (20, 50, 120):
    training.fit(m, x, y, np.arange(300) < n, key=jax.random.key(n), config=cfg)
  assert training.sampled_train_step._cache_size() == before


def test_fit_is_deterministic_and_early_stops():
  x, y = blobs(seed=2)
  m = models.get_model("mlp", (4, 4, 1), 3, hidden=(16,))
  cfg = training.TrainConfig(max_steps=1000, eval_every=10, patience=2, batch_size=64,
                             min_steps=0, min_epochs=0.0)
  a = training.fit(m, x, y, np.arange(300) < 50, key=jax.random.key(1), config=cfg,
                   val=(x[250:], y[250:]))
  b = training.fit(m, x, y, np.arange(300) < 50, key=jax.random.key(1), config=cfg,
                   val=(x[250:], y[250:]))
  assert a.steps == b.steps < 1000
  jax.tree.map(np.testing.assert_array_equal, a.variables, b.variables)


def test_fit_errors():
  x, y = blobs()
  m = models.get_model("mlp", (4, 4, 1), 3)
  with pytest.raises(ValueError, match="no labeled"):
    training.fit(m, x, y, np.zeros(300, bool), key=jax.random.key(0),
                 config=training.TrainConfig())


def test_chunked_prediction_equals_one_pass():
  x, _ = blobs(n=103)
  m = models.get_model("mlp", (4, 4, 1), 3)
  v = m.init(jax.random.key(0), None)
  whole = predict.predict(m, v, x, chunk_size=1024, with_pre_logits=True)
  chunked = predict.predict(m, v, x, chunk_size=16, with_pre_logits=True)
  np.testing.assert_allclose(whole.log_probs, chunked.log_probs, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(whole.pre_logits, chunked.pre_logits, rtol=1e-5, atol=1e-6)
  mc1 = predict.predict(m, v, x, key=jax.random.key(3), mc_samples=6, chunk_size=16)
  mc2 = predict.predict(m, v, x, key=jax.random.key(3), mc_samples=6, chunk_size=1024)
  assert mc1.log_probs.shape == (6, 103, 3)
  np.testing.assert_allclose(mc1.log_probs, mc2.log_probs, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(jnp.exp(mc1.log_probs).sum(-1), 1.0, rtol=1e-5)
  # Each sample is one sub-network: it equals a direct MC apply with that sample's key.
  keys = jax.random.split(jax.random.key(3), 6)
  direct = jax.nn.log_softmax(m.apply(v, x, train=False, mc=True, key=keys[4])[0])
  np.testing.assert_allclose(mc1.log_probs[4], direct, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="needs a `key`"):
    predict.predict(m, v, x, mc_samples=2)


def test_metrics_against_numpy(rng):
  logits = rng.normal(size=(500, 4)) * 3
  lp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  y = rng.integers(0, 4, 500)
  conf, pred = np.exp(lp).max(-1), lp.argmax(-1)
  edges = np.linspace(0, 1, 16)
  ref_ece = 0.0
  for lo, hi in zip(edges[:-1], edges[1:]):
    in_bin = (conf > lo) & (conf <= hi)
    if in_bin.any():
      ref_ece += in_bin.mean() * abs((pred[in_bin] == y[in_bin]).mean() - conf[in_bin].mean())
  got = metrics.classification_metrics(jnp.asarray(lp, jnp.float32), y)
  assert got["accuracy"] == pytest.approx((pred == y).mean())
  assert got["nll"] == pytest.approx(-lp[np.arange(500), y].mean(), rel=1e-5)
  assert got["ece"] == pytest.approx(ref_ece, abs=1e-5)


def test_mixup_step_loss_matches_manual_mixing():
  import optax
  from dal_jax.methods import mixup
  x, y = blobs(n=16)
  m = models.get_model("mlp", (4, 4, 1), 3, hidden=(8,))
  tx = training.make_optimizer(training.TrainConfig())
  term = mixup.loss_term(0.4)
  state = training.init_train_state(training.initialize(m, jax.random.key(0), x[:1], (term,)),
                                    tx)
  key = jax.random.key(3)
  _, metrics_out = training.make_train_step(m, tx, (term,))(state, (x, y), key)
  lam_key, perm_key = jax.random.split(jax.random.fold_in(jax.random.fold_in(key, 1), 0))
  lam = jax.random.beta(lam_key, 0.4, 0.4)
  perm = jax.random.permutation(perm_key, 16)
  logits = m.apply(state.variables["model"], lam * x + (1 - lam) * x[perm], train=True,
                   key=key)[0]
  ce = optax.softmax_cross_entropy_with_integer_labels
  expected = jnp.mean(lam * ce(logits, y) + (1 - lam) * ce(logits, y[perm]))
  np.testing.assert_allclose(metrics_out["loss"], expected, rtol=1e-5)
  assert 0 < float(lam) < 1
  with pytest.raises(ValueError, match="mixup alpha must be > 0"):
    mixup.loss_term(0.0)


def test_loss_terms_add_to_the_cross_entropy():
  """The step loss is CE + Σ terms: a constant term shifts the loss, not the gradient."""
  x, y = blobs(n=16)
  m = models.get_model("mlp", (4, 4, 1), 3, hidden=(8,))
  tx = training.make_optimizer(training.TrainConfig())
  const = training.LossTerm(name="const", loss=lambda p, out: (jnp.float32(2.5), {"c": 1.0}))
  plain = training.init_train_state(training.initialize(m, jax.random.key(0), x[:1]), tx)
  with_term = training.init_train_state(
      training.initialize(m, jax.random.key(0), x[:1], (const,)), tx)
  a, ma = training.make_train_step(m, tx)(plain, (x, y), jax.random.key(1))
  b, mb = training.make_train_step(m, tx, (const,))(with_term, (x, y), jax.random.key(1))
  np.testing.assert_allclose(mb["loss"], ma["loss"] + 2.5, rtol=1e-6)
  assert float(mb["const/c"]) == 1.0
  jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-6, atol=1e-7),
               a.variables["model"], b.variables["model"])


def test_fixed_epochs_without_early_stopping_single_and_stacked():
  """early_stopping="none": exactly max(min_steps, ceil(min_epochs · n / batch)) steps, no
  validation, the last weights; the stacked learner runs each model's own count and its model m
  equals the single-model fit."""
  from dal_jax import learner as learner_lib
  x, y = blobs(seed=3)
  m = models.get_model("mlp", (4, 4, 1), 3, hidden=(8,))
  cfg = training.TrainConfig(max_steps=500, eval_every=7, batch_size=16, min_steps=5,
                             min_epochs=2.0, early_stopping="none")
  for n, want in ((20, 5), (100, 13)):  # max(5, ceil(2·20/16)=3); ceil(2·100/16)=13
    assert training.total_train_steps(cfg, n) == want
    r = training.fit(m, x, y, np.arange(300) < n, key=jax.random.key(n), config=cfg,
                     val=(x[250:], y[250:]))
    assert r.steps == want and r.best_val_accuracy == -1.0  # validation never read
  labeled = np.stack([np.arange(300) < 20, np.arange(300) < 100])
  keys = jax.random.split(jax.random.key(9), 2)
  for vectorize in (False, True):
    stacked = learner_lib.Learner(m, cfg, vectorize=vectorize).fit(
        x, jnp.broadcast_to(y, (2, 300)), labeled, keys=keys, val=(x[250:], y[250:]))
    assert list(stacked.steps) == [5, 13]
  single = training.fit(m, x, y, labeled[1], key=keys[1], config=cfg)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a[1], b, rtol=1e-5, atol=1e-6),
               stacked.variables, single.variables)
  with pytest.raises(ValueError, match="early_stopping must be one of"):
    training.check_train_config(cfg._replace(early_stopping="never"))


def test_dense_kernel_decay_leaves_convolutions_and_biases_alone():
  """decay_params="dense_kernels": the L2 term reaches the 2-D kernels only (Gal et al. 2017's
  Keras W_regularizer on the Dense layers). With zero data gradients, the update of every other
  parameter is exactly zero and every dense kernel moves toward zero."""
  m = models.get_model("gal_cnn", (12, 12, 1), 3)
  variables = training.initialize(m, jax.random.key(0), jnp.zeros((1, 12, 12, 1)))
  for params, want_all in (("dense_kernels", False), ("all", True)):
    cfg = training.TrainConfig(decay="l2", weight_decay=7.0, weight_decay_scale="inverse_n",
                               decay_params=params)
    tx = training.make_optimizer(cfg)
    state = training.init_train_state(variables, tx, config=cfg, n_labeled=20)
    trainable = {"params": variables["model"]["params"], "terms": variables["terms"]}
    zeros = jax.tree.map(jnp.zeros_like, trainable)
    updates, _ = tx.update(zeros, state.opt_state, trainable)
    flat = jax.tree_util.tree_flatten_with_path(updates["params"])[0]
    for path, u in flat:
      names = [getattr(k, "key", getattr(k, "name", "")) for k in path]
      w = np.asarray(jax.tree_util.tree_flatten_with_path(trainable["params"])[0][
          [p for p, _ in flat].index(path)][1])
      dense_kernel = names[-1] == "kernel" and u.ndim == 2
      if dense_kernel or want_all:
        moved = np.asarray(u)[w != 0]
        assert np.all(np.sign(moved) == -np.sign(w[w != 0])), names
      else:
        assert not np.any(np.asarray(u)), names
  with pytest.raises(ValueError, match="decay_params must be one of"):
    training.check_train_config(cfg._replace(decay_params="convs"))
