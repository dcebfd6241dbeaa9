"""EPIG (Bickford Smith et al. 2023) against a float64 NumPy reference written from its
definition, and its invariants."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dal_jax import acquisition as acq
from tests.conftest import random_log_probs


def _epig_reference(lp, tlp):
  """E_{x*} sum_{y, y*} p(y, y*) log p(y, y*) / (p(y) p(y*)), loops over every pair."""
  p, q = np.exp(lp), np.exp(tlp)
  s, n, c = p.shape
  m = q.shape[1]
  out = np.zeros(n)
  for i in range(n):
    for j in range(m):
      joint = np.einsum("sc,sd->cd", p[:, i], q[:, j]) / s
      pm, qm = p[:, i].mean(0), q[:, j].mean(0)
      nz = joint > 0
      out[i] += np.sum(joint[nz] * np.log(joint[nz] / np.outer(pm, qm)[nz]))
  return out / m


def test_epig_matches_a_float64_reference(rng):
  for s, n, m, c in [(7, 11, 5, 3), (12, 9, 20, 6), (3, 4, 17, 2)]:
    lp = random_log_probs(rng, s, n + m, c)
    got = np.asarray(acq.epig(jnp.asarray(lp[:, :n], jnp.float32),
                              jnp.asarray(lp[:, n:], jnp.float32), chunk=4))
    np.testing.assert_allclose(got, _epig_reference(lp[:, :n], lp[:, n:]), rtol=2e-4,
                               atol=2e-6)
    assert (got >= 0).all()


def test_epig_invariants(rng):
  lp = jnp.asarray(random_log_probs(rng, 6, 30, 4), jnp.float32)
  targets = lp[:, 20:]
  base = np.asarray(acq.epig(lp[:, :20], targets))
  # Candidates permuted -> scores permuted; targets permuted -> same scores.
  perm = rng.permutation(20)
  np.testing.assert_allclose(np.asarray(acq.epig(lp[:, perm], targets)), base[perm], rtol=1e-5)
  np.testing.assert_allclose(np.asarray(acq.epig(lp[:, :20], targets[:, ::-1])), base,
                             rtol=1e-5, atol=1e-7)
  # One parameter sample: y and y* are independent, nothing to gain.
  np.testing.assert_allclose(np.asarray(acq.epig(lp[:1, :20], targets[:1])), 0.0, atol=1e-6)
  where = np.arange(20) % 3 != 0
  masked = np.asarray(acq.epig(lp[:, :20], targets, where=jnp.asarray(where)))
  assert np.isneginf(masked[~where]).all()
  np.testing.assert_allclose(masked[where], base[where], rtol=1e-6)
  with pytest.raises(ValueError, match=r"same S samples and C classes"):
    acq.epig(lp[:, :20], targets[:3])


def test_epig_acquisition_selects_distinct_candidates_and_refuses_bad_options(rng):
  lp = jnp.asarray(random_log_probs(rng, 8, 60, 5), jnp.float32)
  where = jnp.asarray(np.arange(60) >= 10)
  key = jax.random.key(3)
  picked = np.asarray(acq.acquire("epig", {"log_probs": lp}, key=key, k=7, where=where,
                                  num_targets=25))
  assert len(set(picked.tolist())) == 7 and (picked >= 10).all()
  again = acq.acquire("epig", {"log_probs": lp}, key=key, k=7, where=where, num_targets=25)
  np.testing.assert_array_equal(picked, np.asarray(again))  # same key, same selection
  with pytest.raises(ValueError, match=r"epig: option num_targets must be an integer >= 1, got 0"):
    acq.get_acquisition("epig", num_targets=0)
  with pytest.raises(ValueError, match=r"epig scores whole items"):
    acq.acquire("epig", {"log_probs": lp[:, :, None, None, :]}, key=key, k=2,
                where=jnp.ones(60, bool))
