"""Every score against a float64 NumPy reference, known answers, masks, invariances, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dal_jax import acquisition as acq
from tests.conftest import random_log_probs


# ---- float64 NumPy references, written from the definitions ----

def ref_entropy(p):
  return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=-1)


def ref_scores(name, lp):
  p = np.exp(lp)  # [S, N, C]
  pm = p.mean(0)
  if name == "entropy":
    return ref_entropy(pm)
  if name == "least_confidence":
    return 1.0 - pm.max(-1)
  if name == "margin":
    srt = np.sort(pm, axis=-1)
    return -(srt[:, -1] - srt[:, -2])
  if name == "variation_ratios":
    votes = p.argmax(-1)  # [S, N]
    s, n = votes.shape
    return np.array([1.0 - np.bincount(votes[:, i]).max() / s for i in range(n)])
  if name == "mean_std":
    return p.std(axis=0).mean(-1)
  if name == "bald":
    return ref_entropy(pm) - ref_entropy(p).mean(0)
  if name == "vote_entropy":
    votes = p.argmax(-1)
    s, n = votes.shape
    return np.array([ref_entropy(np.bincount(votes[:, i], minlength=p.shape[2]) / s)
                     for i in range(n)])
  if name == "consensus_kl":
    return np.mean(np.sum(p * (lp - np.log(pm)[None]), -1), 0)
  raise KeyError(name)


FNS = {"entropy": acq.predictive_entropy, "least_confidence": acq.least_confidence,
       "margin": acq.margin, "variation_ratios": acq.variation_ratios,
       "mean_std": acq.mean_std, "bald": acq.bald, "vote_entropy": acq.vote_entropy,
       "consensus_kl": acq.consensus_kl}


@pytest.mark.parametrize("name", sorted(FNS))
@pytest.mark.parametrize("s", [1, 7])
def test_matches_float64_reference(name, s, rng):
  for _ in range(3):
    lp = random_log_probs(rng, s, 50, 6)
    got = np.asarray(FNS[name](jnp.asarray(lp, jnp.float32)))
    np.testing.assert_allclose(got, ref_scores(name, lp), rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("name", sorted(FNS))
def test_where_masks_to_minus_inf_and_equals_slicing(name, rng):
  lp = jnp.asarray(random_log_probs(rng, 5, 40, 4), jnp.float32)
  where = jnp.asarray(rng.random(40) < 0.5)
  masked = np.asarray(FNS[name](lp, where=where))
  sliced = np.asarray(FNS[name](lp[:, where]))
  assert np.all(masked[~np.asarray(where)] == -np.inf)
  np.testing.assert_allclose(masked[np.asarray(where)], sliced, rtol=1e-6)


@pytest.mark.parametrize("name", sorted(FNS))
def test_permutation_equivariant_and_jittable(name, rng):
  lp = jnp.asarray(random_log_probs(rng, 6, 30, 5), jnp.float32)
  perm = rng.permutation(30)
  base = np.asarray(FNS[name](lp))
  np.testing.assert_allclose(np.asarray(FNS[name](lp[:, perm])), base[perm], rtol=1e-6)
  np.testing.assert_allclose(np.asarray(jax.jit(FNS[name])(lp)), base, rtol=1e-5, atol=2e-6)


def test_known_answers():
  c = 4
  uniform = jnp.full((3, 1, c), -np.log(c))
  np.testing.assert_allclose(acq.predictive_entropy(uniform), [np.log(c)], rtol=1e-6)
  np.testing.assert_allclose(acq.least_confidence(uniform), [1 - 1 / c], rtol=1e-6)
  np.testing.assert_allclose(acq.margin(uniform), [0.0], atol=1e-7)
  np.testing.assert_allclose(acq.bald(uniform), [0.0], atol=1e-7)
  # Two confident samples that disagree: predictive entropy log 2, each sample's entropy ~0.
  lp = jnp.log(jnp.array([[[1.0, 0.0]], [[0.0, 1.0]]]))
  np.testing.assert_allclose(acq.bald(lp), [np.log(2)], rtol=1e-6)
  np.testing.assert_allclose(acq.variation_ratios(lp), [0.5])
  np.testing.assert_allclose(acq.mean_std(lp), [0.5], rtol=1e-6)
  np.testing.assert_allclose(acq.vote_entropy(lp), [np.log(2)], rtol=1e-6)
  np.testing.assert_allclose(acq.consensus_kl(lp), [np.log(2)], rtol=1e-6)
  # Votes 0, 0, 1, 2 over 3 classes: modal count 2 of 4 -> 0.5.
  votes = jnp.log(jax.nn.one_hot(jnp.array([0, 0, 1, 2]), 3) * 0.9 + 0.1 / 3)[:, None, :]
  np.testing.assert_allclose(acq.variation_ratios(votes), [0.5])
  # Margin of [0.6, 0.3, 0.1] is 0.3 -> score -0.3.
  np.testing.assert_allclose(acq.margin(jnp.log(jnp.array([[[0.6, 0.3, 0.1]]]))), [-0.3],
                             rtol=1e-6)


def test_bald_nonnegative_and_zero_when_samples_agree(rng):
  for _ in range(5):
    lp = random_log_probs(rng, 10, 100, 7, sharp=6.0)
    assert np.all(np.asarray(acq.bald(jnp.asarray(lp, jnp.float32))) >= 0)
    same = np.repeat(lp[:1], 10, axis=0)
    np.testing.assert_allclose(acq.bald(jnp.asarray(same, jnp.float32)), 0.0, atol=1e-6)
  # S = 1: a deterministic net has no epistemic term.
  np.testing.assert_allclose(acq.bald(jnp.asarray(lp[:1], jnp.float32)), 0.0, atol=1e-6)


def test_underflowed_probabilities_do_not_make_nan():
  lp = jnp.array([[[0.0, -jnp.inf, -1e4]], [[-jnp.inf, 0.0, -1e4]]])
  for fn in FNS.values():
    assert np.all(np.isfinite(np.asarray(fn(lp))))


@pytest.mark.parametrize("name", sorted(FNS))
def test_bad_inputs_raise(name):
  fn = FNS[name]
  with pytest.raises(ValueError, match=r"\[S, N, C\]"):
    fn(jnp.zeros((5, 3)))
  with pytest.raises(ValueError, match="NaN"):
    fn(jnp.full((2, 3, 4), jnp.nan))
  with pytest.raises(ValueError, match="where"):
    fn(jnp.full((2, 3, 4), -jnp.log(4.0)), where=jnp.ones(4, bool))
  with pytest.raises(ValueError, match="C >= 2"):
    fn(jnp.zeros((2, 3, 1)))


def test_random_scores_deterministic_and_masked():
  where = jnp.arange(10) % 2 == 0
  a = acq.random_scores(jax.random.key(3), 10, where=where)
  b = acq.random_scores(jax.random.key(3), 10, where=where)
  np.testing.assert_array_equal(a, b)
  assert np.all(np.asarray(a)[1::2] == -np.inf)
  assert np.all((np.asarray(a)[::2] >= 0) & (np.asarray(a)[::2] < 1))
