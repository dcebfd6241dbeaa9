"""MaxHerding-style selection (greedy kernel herding of the coverage) against a float64 NumPy
reference of the same greedy rule, with the batch invariants."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dal_jax import acquisition as acq


def _check_greedy(x, picks, where, sigma):
  """float64 replay of the greedy rule along ``picks`` (targets = every point, coverage starting
  at the labeled points'): each pick's gain is the largest gain (to float32 precision: exact
  near-ties may go either way) and is then added. Returns the picks the reference would make
  where it is not within a near-tie of ours."""
  x = np.asarray(x, np.float64)
  d2 = ((x[:, None] - x[None]) ** 2).sum(-1)
  kern = np.exp(-d2 / (2 * sigma ** 2))
  covered = kern[~where].max(0) if (~where).any() else np.zeros(len(x))
  free = where.copy()
  for c in picks:
    gains = np.maximum(kern - covered[None], 0).sum(1)
    gains[~free] = -np.inf
    assert free[c] and gains[c] >= gains.max() - 1e-4 * max(1.0, gains.max()), (c, gains.max())
    covered = np.maximum(covered, kern[c])
    free[c] = False


def test_matches_a_float64_greedy_reference_on_fresh_inputs():
  rng = np.random.default_rng(0)
  for trial in range(3):
    n = 120
    x = rng.normal(size=(n, 5)).astype(np.float32)
    where = rng.random(n) < (0.8 if trial else 1.0)  # trial 0: nothing labeled
    sigma = float(rng.uniform(0.8, 2.0))
    got = acq.maxherding(jnp.asarray(x), 8, key=jax.random.key(trial), where=jnp.asarray(where),
                         num_targets=n, bandwidth=sigma, chunk_size=50)
    picks = np.asarray(got).tolist()
    assert len(set(picks)) == 8
    _check_greedy(x, picks, where, sigma)


def test_labeled_points_cover_their_cluster():
  """Two tight clusters, one holding a labeled point: the first pick is in the other one."""
  rng = np.random.default_rng(1)
  a = rng.normal(size=(30, 2)) * 0.05
  b = rng.normal(size=(30, 2)) * 0.05 + 5.0
  x = jnp.asarray(np.concatenate([a, b]), jnp.float32)
  where = np.ones(60, bool)
  where[0] = False  # labeled, in cluster a
  first = int(acq.maxherding(x, 1, key=jax.random.key(0), where=jnp.asarray(where),
                             bandwidth=0.5)[0])
  assert first >= 30


def test_registered_with_embeddings_and_options_checked():
  rng = np.random.default_rng(2)
  emb = jnp.asarray(rng.normal(size=(80, 4)), jnp.float32)
  a = acq.get_acquisition("maxherding", num_targets=40)
  idx, _ = acq.checked_select(a, {}, {"embeddings": emb}, key=jax.random.key(0), k=6,
                              where=jnp.asarray(rng.random(80) < 0.7))
  assert len(set(np.asarray(idx).tolist())) == 6
  with pytest.raises(ValueError, match="bandwidth must be a finite number >= 0"):
    acq.maxherding(emb, 3, key=jax.random.key(0), bandwidth=float("nan"))
