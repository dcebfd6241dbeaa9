"""DropQuery-style selection: inconsistency under dropout against a float64 NumPy reference,
known answers for the candidate set, and the batch invariants."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import log_softmax

from dal_jax import acquisition as acq


def _reference_disagreement(log_probs):
  lp = np.asarray(log_probs, np.float64)
  mean_class = np.log(np.exp(lp).mean(0)).argmax(-1)
  return (lp.argmax(-1) != mean_class[None]).mean(0)


def _log_probs(rng, s, n, c, scale=2.0):
  return log_softmax(rng.normal(size=(s, n, c)) * scale, axis=-1).astype(np.float32)


def test_disagreement_matches_a_float64_reference():
  rng = np.random.default_rng(0)
  for _ in range(3):
    lp = _log_probs(rng, 7, 200, 5)
    np.testing.assert_allclose(np.asarray(acq.dropout_disagreement(jnp.asarray(lp))),
                               _reference_disagreement(lp), atol=1e-7)


def _with_inconsistent(rng, n, inconsistent):
  """Log-probs where exactly the items of ``inconsistent`` flip class in 3 of 4 samples."""
  lp = np.full((4, n, 3), np.log(0.05), np.float32)
  lp[..., 0] = np.log(0.9)
  for i in inconsistent:
    lp[1:, i] = np.log([0.05, 0.9, 0.05])  # sample 0 says 0; samples 1-3 say 1
    lp[0, i] = np.log([0.9, 0.05, 0.05])
  return jnp.asarray(lp)


def test_known_candidates_are_selected():
  rng = np.random.default_rng(1)
  n, k = 60, 5
  emb = jnp.asarray(rng.normal(size=(n, 4)), jnp.float32)
  exact = rng.choice(n, k, replace=False)
  picked = acq.dropquery(_with_inconsistent(rng, n, exact), emb, k, key=jax.random.key(0))
  assert sorted(np.asarray(picked).tolist()) == sorted(exact.tolist())
  many = rng.choice(n, 20, replace=False)
  where = np.ones(n, bool)
  where[many[:3]] = False  # labeled already: never picked
  lp = _with_inconsistent(rng, n, many)
  a = np.asarray(acq.dropquery(lp, emb, k, key=jax.random.key(2), where=jnp.asarray(where)))
  b = np.asarray(acq.dropquery(lp, emb, k, key=jax.random.key(2), where=jnp.asarray(where)))
  assert len(set(a.tolist())) == k and set(a.tolist()) <= set(many[3:].tolist())
  np.testing.assert_array_equal(a, b)


def test_fewer_inconsistent_than_k_takes_the_most_inconsistent():
  rng = np.random.default_rng(2)
  n, k = 50, 6
  lp = _log_probs(rng, 5, n, 4, scale=0.5)
  d = _reference_disagreement(lp)
  threshold = float(np.sort(d)[-3])  # at most 2 items lie strictly above it
  picked = acq.dropquery(jnp.asarray(lp), jnp.asarray(rng.normal(size=(n, 3)), jnp.float32), k,
                         key=jax.random.key(0), threshold=min(threshold, 0.99))
  top = set(np.argsort(-d, kind="stable")[:k].tolist())
  picked = set(np.asarray(picked).tolist())
  assert len(picked) == k
  # Ties at the k-th disagreement may be broken either way: compare the disagreement values.
  assert sorted(d[list(picked)]) == sorted(d[list(top)])


def test_dropquery_is_registered_and_checks_its_options():
  a = acq.get_acquisition("dropquery", threshold=0.25)
  rng = np.random.default_rng(3)
  lp = jnp.asarray(_log_probs(rng, 5, 40, 3))
  out = {"log_probs": lp, "pre_logits": jnp.asarray(rng.normal(size=(40, 4)), jnp.float32)}
  idx, _ = acq.checked_select(a, {}, out, key=jax.random.key(0), k=4,
                              where=jnp.ones(40, bool))
  assert len(set(np.asarray(idx).tolist())) == 4
  with pytest.raises(ValueError, match="threshold must be a number in \\[0, 1\\), got 1.5"):
    acq.dropquery(lp, out["pre_logits"], 4, key=jax.random.key(0), threshold=1.5)
