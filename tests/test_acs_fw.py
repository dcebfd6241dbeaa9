"""ACS-FW (Pinsler et al. 2019) against a float64 NumPy Frank–Wolfe written from the paper's
update rules, with the batch invariants."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dal_jax import acquisition as acq
from dal_jax.acquisition import _sparse_subset


def _reference(log_probs, where, k, max_iters):
  """float64 ACS-FW: projections, then Frank–Wolfe until the support holds k points. Returns
  the weights, the per-step choices and their alignment gaps (for near-tie checks)."""
  lp = np.asarray(log_probs, np.float64)
  j = lp.shape[0]
  p_bar = np.exp(lp).mean(0)
  proj = np.einsum("nc,jnc->nj", p_bar, lp) / np.sqrt(j)
  z = proj * where[:, None]
  sig_n = np.linalg.norm(z, axis=1)
  sig = sig_n.sum()
  target = z.sum(0)
  w = np.zeros(len(z))
  approx = np.zeros(j)
  steps = []
  for _ in range(max_iters):
    if (w > 0).sum() >= k:
      break
    align = np.full(len(z), -np.inf)
    align[where] = z[where] @ (target - approx) / sig_n[where]
    f = int(np.argmax(align))
    steps.append((f, np.sort(align[np.isfinite(align)])[::-1]))
    vertex = sig / sig_n[f] * z[f]
    d = vertex - approx
    gamma = np.clip(d @ (target - approx) / (d @ d), 0.0, 1.0)
    w = (1 - gamma) * w
    w[f] += gamma * sig / sig_n[f]
    approx = (1 - gamma) * approx + gamma * vertex
  # Invariant of the method: L(w) is the weighted sum of the projections.
  np.testing.assert_allclose(approx, w @ z, rtol=1e-9, atol=1e-12)
  return w, steps


@pytest.mark.parametrize("trial", range(3))
def test_matches_a_float64_frank_wolfe_reference(trial):
  rng = np.random.default_rng(10 + trial)
  n, c, j, k = 80, 4, 12, 6
  log_probs = jax.nn.log_softmax(jnp.asarray(rng.normal(size=(j, n, c)) * 2.0, jnp.float32))
  where = rng.random(n) < (0.75 if trial else 1.0)
  got = np.asarray(acq.acs_fw(log_probs, k, key=jax.random.key(0),
                              where=jnp.asarray(where))).tolist()
  w, steps = _reference(log_probs, where, k, 20 * k)
  for f, top in steps:  # no near-ties on these inputs, so float32 must follow the same path
    assert top[0] - top[1] > 1e-4 * abs(top[0])
  support = np.nonzero(w > 0)[0]
  assert len(support) == k
  assert sorted(got) == sorted(support.tolist())
  assert got == sorted(support.tolist(), key=lambda i: -w[i])  # largest weight first
  _, w32, _ = _sparse_subset._frank_wolfe(_sparse_subset.projections(log_probs),
                                          jnp.asarray(where), k=k, max_iters=20 * k)
  np.testing.assert_allclose(np.asarray(w32), w, rtol=2e-3, atol=1e-5)


def test_short_support_is_filled_to_exactly_k():
  """max_iters=1: one Frank–Wolfe step holds one point; the other k-1 are the best-aligned."""
  rng = np.random.default_rng(3)
  log_probs = jax.nn.log_softmax(jnp.asarray(rng.normal(size=(6, 50, 3)), jnp.float32))
  where = jnp.asarray(rng.random(50) < 0.8)
  got = np.asarray(acq.acs_fw(log_probs, 5, key=jax.random.key(0), where=where, max_iters=1))
  assert len(set(got.tolist())) == 5 and bool(jnp.all(where[got]))
  proj = np.asarray(_sparse_subset.projections(log_probs), np.float64)
  z = proj * np.asarray(where)[:, None]
  sig = np.linalg.norm(z, axis=1)
  first = int(np.argmax(np.where(where, z @ z.sum(0) / np.where(sig > 0, sig, 1), -np.inf)))
  assert got[0] == first


def test_invariants_permutation_and_registry():
  rng = np.random.default_rng(4)
  n, k = 70, 7
  log_probs = jax.nn.log_softmax(jnp.asarray(rng.normal(size=(8, n, 5)) * 2, jnp.float32))
  where = jnp.asarray(rng.random(n) < 0.8)
  got = np.asarray(acq.acs_fw(log_probs, k, key=jax.random.key(0), where=where))
  perm = rng.permutation(n)
  got_p = np.asarray(acq.acs_fw(log_probs[:, perm], k, key=jax.random.key(0),
                                where=where[perm]))
  assert sorted(perm[got_p].tolist()) == sorted(got.tolist())
  idx = acq.acquire("acs_fw", {"log_probs": log_probs}, key=jax.random.key(0), k=k, where=where)
  assert sorted(np.asarray(idx).tolist()) == sorted(got.tolist())


def test_refusals_in_one_line():
  lp = jax.nn.log_softmax(jnp.zeros((1, 10, 3)))
  with pytest.raises(ValueError, match="needs J >= 2"):
    acq.acs_fw(lp, 2, key=jax.random.key(0))
  with pytest.raises(ValueError, match="cannot select k=11"):
    acq.acs_fw(jnp.concatenate([lp, lp]), 11, key=jax.random.key(0))
  with pytest.raises(ValueError, match="acs_fw has no options"):
    acq.get_acquisition("acs_fw", iters=3)
