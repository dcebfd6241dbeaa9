"""Models: the pure init/apply contract, MC dropout, batch-norm in inference mode."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dal_jax import models

CASES = [("mlp", (8, 8, 1), {}), ("gal_cnn", (12, 12, 1), {}),
         ("resnet18", (8, 8, 3), {"width": 4, "blocks": (1, 1, 1, 1)})]


@pytest.mark.parametrize("name,shape,kw", CASES)
def test_contract(name, shape, kw):
  m = models.get_model(name, shape, 5, **kw)
  v = m.init(jax.random.key(0), None)
  x = jax.random.normal(jax.random.key(1), (6, *shape))
  logits, aux = m.apply(v, x, train=False)
  assert logits.shape == (6, 5) and aux["pre_logits"].shape[0] == 6
  # Deterministic inference is deterministic; MC dropout varies with the key, not without it.
  np.testing.assert_array_equal(logits, m.apply(v, x, train=False)[0])
  a = m.apply(v, x, train=False, mc=True, key=jax.random.key(2))[0]
  b = m.apply(v, x, train=False, mc=True, key=jax.random.key(2))[0]
  c = m.apply(v, x, train=False, mc=True, key=jax.random.key(3))[0]
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)
  # Training returns the updated non-parameter collections.
  _, aux_t = m.apply(v, x, train=True, key=jax.random.key(4))
  assert set(aux_t["updates"]) == {"batch_stats"}
  with pytest.raises(ValueError, match="key"):
    m.apply(v, x, train=True)


def test_mc_dropout_is_consistent_and_batchnorm_stays_in_inference():
  m = models.get_model("resnet18", (8, 8, 3), 4, width=4, blocks=(1, 1, 1, 1))
  v = m.init(jax.random.key(0), None)
  x = jax.random.normal(jax.random.key(1), (5, 8, 8, 3))
  key = jax.random.key(7)
  full = m.apply(v, x, train=False, mc=True, key=key)[0]
  part = m.apply(v, x[:2], train=False, mc=True, key=key)[0]
  # Same mask for every example, and batch-norm uses running statistics: an example's MC output
  # does not depend on what else is in the batch.
  np.testing.assert_allclose(full[:2], part, rtol=1e-5, atol=1e-6)
  dup = m.apply(v, jnp.concatenate([x[:1], x[:1]]), train=False, mc=True, key=key)[0]
  np.testing.assert_allclose(dup[0], dup[1], rtol=1e-6)


def test_unknown_model_and_bad_shape():
  with pytest.raises(ValueError, match="unknown model 'vgg'.*gal_cnn"):
    models.get_model("vgg", (28, 28, 1), 10)
  with pytest.raises(ValueError, match=r"\[H, W, C\]"):
    models.get_model("gal_cnn", (784,), 10)
  with pytest.raises(ValueError, match="at least 8x8"):
    models.get_model("gal_cnn", (6, 6, 1), 10)


def test_folded_mc_dropout_equals_masking_the_activations():
  from flax import nnx
  drop = models.MCDropout(0.3)
  layer = nnx.Linear(6, 4, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(1), (5, 6))
  key = jax.random.key(2)
  got = drop.linear(x, layer, train=False, mc=True, rngs=nnx.Rngs(dropout=key))
  mask = jax.random.bernoulli(nnx.Rngs(dropout=key).dropout(), 0.7, (6,))
  expected = layer(jnp.where(mask, x / 0.7, 0.0))
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
  # Deterministic inference: no dropout at all.
  np.testing.assert_allclose(drop.linear(x, layer, train=False, mc=False), layer(x), rtol=1e-6)


# ResNet-18's stacked compiles take the better part of a minute on 2 cores: a slow check (its
# contract, above, stays in the default suite).
STACK_CASES = CASES[:2] + [pytest.param(*CASES[2], marks=pytest.mark.slow)]


@pytest.mark.parametrize("name,shape,kw", STACK_CASES)
def test_every_model_trains_alone_in_an_ensemble_and_as_parallel_seeds(name, shape, kw):
  """A few steps on each learner path: one model, an ensemble of 3, 2 seeds with their own
  labeled sets; ResNet-18's batch statistics change in training."""
  from dal_jax import learner as learner_lib
  from dal_jax import training
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.random((40, *shape)), jnp.float32)
  y = jnp.asarray(rng.integers(0, 3, 40), jnp.int32)
  model = models.get_model(name, shape, 3, **kw)
  cfg = training.TrainConfig(batch_size=8, max_steps=2, eval_every=2)
  lrn = learner_lib.Learner(model, cfg)
  paths = [(1, np.arange(40) < 20), (3, np.arange(40) < 20),
           (2, np.stack([np.arange(40) < 10, np.arange(40) >= 30]))]
  if name == "resnet18":  # its compiles are the slowest: the stacked path with its own sets
    paths = paths[2:]
  for m, labeled in paths:
    keys = jax.random.split(jax.random.key(m), m)
    fit = lrn.fit(x, y, labeled, keys=keys)
    assert list(fit.steps) == [2] * m and np.isfinite(fit.train_loss).all()
    init = lrn.init(jax.random.split(jax.random.key(0), m), x)
    assert jax.tree.leaves(fit.variables)[0].shape[0] == m
    if name == "resnet18":
      before = jax.tree.leaves(init["model"]["batch_stats"])
      after = jax.tree.leaves(fit.variables["model"]["batch_stats"])
      assert any(not np.allclose(a, b) for a, b in zip(before, after))
    out = lrn.predict(fit.variables, x[:5], keys=keys, mc_samples=2, with_pre_logits=True)
    assert out.log_probs.shape == (m, 2, 5, 3) and out.pre_logits.shape[:2] == (m, 5)


def test_folded_consistent_mc_dropout_equals_explicit_masks_in_conv_and_dense_layers():
  """GalCNN with channel dropout between its convolutions and dropout before both dense layers:
  the masks folded into the next kernels give the same MC predictions and BALD scores as the same
  consistent masks applied to the activations (same model, same keys), and the MC samples are
  one sub-network each (an example's output does not depend on the rest of the batch)."""
  from dal_jax import acquisition as acq
  from dal_jax import predict as predict_lib
  kw = dict(filters=6, hidden=16, conv_dropout=0.3)
  folded = models.get_model("gal_cnn", (14, 14, 1), 4, **kw)
  explicit = models.get_model("gal_cnn", (14, 14, 1), 4, fold_masks=False, **kw)
  v = folded.init(jax.random.key(0), None)
  x = jax.random.uniform(jax.random.key(1), (9, 14, 14, 1))
  key = jax.random.key(2)
  a = predict_lib.predict(folded, v, x, key=key, mc_samples=12, chunk_size=4).log_probs
  b = predict_lib.predict(explicit, v, x, key=key, mc_samples=12, chunk_size=4).log_probs
  np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(acq.bald(a), acq.bald(b), rtol=1e-3, atol=1e-6)
  assert float(jnp.std(a, axis=0).mean()) > 1e-3  # the samples differ: dropout is on
  # Channel dropout in the conv layer changes MC predictions (vs the same model without it).
  plain = models.get_model("gal_cnn", (14, 14, 1), 4, filters=6, hidden=16)
  c = predict_lib.predict(plain, v, x, key=key, mc_samples=12, chunk_size=4).log_probs
  assert not np.allclose(a, c, atol=1e-3)
  part = predict_lib.predict(folded, v, x[:3], key=key, mc_samples=12, chunk_size=4).log_probs
  np.testing.assert_allclose(a[:, :3], part, rtol=1e-4, atol=1e-5)
  with pytest.raises(ValueError, match="conv_dropout"):
    models.get_model("gal_cnn", (14, 14, 1), 4, conv_dropout=1.0)
