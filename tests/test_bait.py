"""BAIT (Ash et al. 2021) against a float64 NumPy reference that forms every Fisher matrix and
inverse explicitly, with the batch invariants."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dal_jax import acquisition as acq
from dal_jax.acquisition import _fisher


def _fisher64(p, h):
  """``[N, C D, C D]`` ``(diag p - p pᵀ) ⊗ h hᵀ`` in float64, written out."""
  out = []
  for pi, hi in zip(p, h):
    out.append(np.kron(np.diag(pi) - np.outer(pi, pi), np.outer(hi, hi)))
  return np.stack(out)


def _objective(m, f):
  return float(np.trace(np.linalg.solve(m, f)))


def _reference(p, h, where, k, lam, total):
  """The greedy forward (``total`` picks) and backward (down to k) rules with explicit inverses.
  Returns the forward picks, the kept set, and a checker for near-ties (float32 precision)."""
  fis = _fisher64(p, h)
  d = fis.shape[1]
  f = fis[where].mean(0)
  m = lam * np.eye(d) + fis[~where].sum(0)
  picks, free = [], where.copy()
  for _ in range(total):
    base = _objective(m, f)
    gains = np.array([base - _objective(m + fis[i], f) if free[i] else -np.inf
                      for i in range(len(p))])
    j = int(np.argmax(gains))
    picks.append((j, gains))
    m = m + fis[j]
    free[j] = False
  removed = []
  keep = [j for j, _ in picks]
  for _ in range(total - k):
    base = _objective(m, f)
    costs = {j: _objective(m - fis[j], f) - base for j in keep}
    j = min(costs, key=costs.get)
    removed.append((j, costs))
    m = m - fis[j]
    keep.remove(j)
  return picks, removed, keep


@pytest.mark.parametrize("trial", range(3))
def test_matches_a_float64_explicit_fisher_reference(trial):
  rng = np.random.default_rng(trial)
  n, c, dim, k = 40, 3, 4, 4
  logits = rng.normal(size=(5, n, c)) * 1.5
  log_probs = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32))
  h = rng.normal(size=(n, dim)).astype(np.float32)
  where = rng.random(n) < (0.7 if trial else 1.0)  # trial 0: nothing labeled
  lam = [1.0, 0.5, 2.0][trial]
  got = np.asarray(acq.bait(log_probs, jnp.asarray(h), k, key=jax.random.key(0),
                            where=jnp.asarray(where), lam=lam)).tolist()
  p = np.exp(np.asarray(jax.nn.logsumexp(log_probs, 0), np.float64) - np.log(5))
  picks, removed, keep = _reference(p, h.astype(np.float64), where, k, lam, 2 * k)
  # Our kept set must be the reference's (no near-ties at these sizes: checked below).
  for j, gains in picks:
    top = np.sort(gains[np.isfinite(gains)])[::-1]
    assert top[0] - top[1] > 1e-4 * top[0]
  assert len(set(got)) == k and all(where[i] for i in got)
  assert sorted(got) == sorted(keep)
  assert got == [j for j, _ in picks if j in keep]  # in the order chosen


def test_low_rank_blocks_equal_direct_recomputation():
  """After a forward step, the updated per-point blocks hᵀ A_ab h equal a direct recomputation
  from the explicit inverse (the Woodbury updates are exact)."""
  rng = np.random.default_rng(7)
  n, c, dim = 30, 4, 3
  p = jax.nn.softmax(jnp.asarray(rng.normal(size=(n, c)), jnp.float32))
  h = jnp.asarray(rng.normal(size=(n, dim)), jnp.float32)
  lf = np.asarray(_fisher.fisher_factors(p))
  p64 = np.asarray(p, np.float64)
  for i in range(n):
    np.testing.assert_allclose(lf[i].T @ lf[i], np.diag(p64[i]) - np.outer(p64[i], p64[i]),
                               atol=1e-6)
  fis = _fisher64(p64, np.asarray(h, np.float64))
  a = np.linalg.inv(np.eye(c * dim) + fis[:5].sum(0))
  blocks = np.asarray(_fisher._blocks(h, jnp.asarray(a, jnp.float32), c))
  for i in range(n):
    v = np.kron(lf[i], np.asarray(h[i], np.float64)[None])  # [C, C D]
    np.testing.assert_allclose(lf[i] @ blocks[i] @ lf[i].T, v @ a @ v.T, rtol=1e-4, atol=1e-6)


def test_invariants_permutation_and_registry():
  rng = np.random.default_rng(3)
  n, c, dim, k = 60, 4, 5, 6
  log_probs = jax.nn.log_softmax(jnp.asarray(rng.normal(size=(3, n, c)) * 2, jnp.float32))
  h = jnp.asarray(rng.normal(size=(n, dim)), jnp.float32)
  where = jnp.asarray(rng.random(n) < 0.8)
  got = np.asarray(acq.bait(log_probs, h, k, key=jax.random.key(0), where=where))
  perm = rng.permutation(n)
  got_p = np.asarray(acq.bait(log_probs[:, perm], h[perm], k, key=jax.random.key(1),
                              where=where[perm]))
  assert sorted(perm[got_p].tolist()) == sorted(got.tolist())
  a = acq.get_acquisition("bait", lam=0.5)
  idx = acq.acquire(a, {"log_probs": log_probs, "pre_logits": h}, key=jax.random.key(0), k=k,
                    where=where)
  assert len(set(np.asarray(idx).tolist())) == k and bool(jnp.all(where[idx]))
  # k equal to the number of candidates: no oversampling room, every candidate is returned.
  few = jnp.zeros(n, bool).at[:k].set(True)
  assert sorted(np.asarray(acq.bait(log_probs, h, k, key=jax.random.key(0), where=few))
                .tolist()) == list(range(k))


def test_bad_options_and_inputs_refused_in_one_line():
  rng = np.random.default_rng(4)
  log_probs = jax.nn.log_softmax(jnp.asarray(rng.normal(size=(2, 10, 3)), jnp.float32))
  h = jnp.asarray(rng.normal(size=(10, 2)), jnp.float32)
  with pytest.raises(ValueError, match="lam must be > 0"):
    acq.bait(log_probs, h, 2, key=jax.random.key(0), lam=0.0)
  with pytest.raises(ValueError, match="oversample must be a finite number >= 1"):
    acq.bait(log_probs, h, 2, key=jax.random.key(0), oversample=0.5)
  with pytest.raises(ValueError, match="pre_logits has 9 rows"):
    acq.bait(log_probs, h[:9], 2, key=jax.random.key(0))
  with pytest.raises(ValueError, match="cannot select k=11"):
    acq.bait(log_probs, h, 11, key=jax.random.key(0))
  with pytest.raises(ValueError, match="bait has no options"):
    acq.get_acquisition("bait", lamda=1.0)
