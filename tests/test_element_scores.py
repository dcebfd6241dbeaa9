"""Per-element (per-pixel) scores ``[S, N, ..., C] -> [N, ...]`` and their reduction to one score
per item, against float64 NumPy references on fresh random inputs and known cases."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import log_softmax
from scipy.special import logsumexp

from dal_jax import acquisition as acq


def _log_probs(rng, shape):
  return log_softmax(rng.normal(size=shape) * 2.0, axis=-1)


def _entropy(log_p):
  p = np.exp(log_p)
  return -(np.where(p > 0, p * log_p, 0.0)).sum(-1)


def _mean_lp(lp):
  return logsumexp(lp, axis=0) - np.log(lp.shape[0])


REFERENCES = {
    "predictive_entropy": lambda lp: _entropy(_mean_lp(lp)),
    "least_confidence": lambda lp: 1 - np.exp(_mean_lp(lp)).max(-1),
    "margin": lambda lp: -np.diff(np.sort(np.exp(_mean_lp(lp)), -1)[..., -2:], axis=-1)[..., 0],
    "bald": lambda lp: np.maximum(_entropy(_mean_lp(lp)) - _entropy(lp).mean(0), 0),
    "mean_std": lambda lp: np.exp(lp).std(0).mean(-1),
    "variation_ratios": lambda lp: 1 - np.apply_along_axis(
        lambda v: np.bincount(v, minlength=lp.shape[-1]).max(), 0, lp.argmax(-1)) / lp.shape[0],
    "vote_entropy": lambda lp: _entropy(np.log(np.maximum(np.apply_along_axis(
        lambda v: np.bincount(v, minlength=lp.shape[-1]), 0, lp.argmax(-1)) / lp.shape[0],
        1e-300)).transpose(*range(1, lp.ndim - 1), 0)),
}


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_every_score_is_the_same_formula_per_pixel(rng, name):
  lp = _log_probs(rng, (5, 3, 4, 6, 7))  # [S, N, H, W, C]
  where = rng.random((3, 4, 6)) > 0.3
  got = np.asarray(getattr(acq, name)(jnp.asarray(lp, jnp.float32), where=jnp.asarray(where)))
  want = REFERENCES[name](lp)
  assert got.shape == (3, 4, 6)
  np.testing.assert_allclose(got[where], want[where], rtol=1e-4, atol=2e-5)
  assert np.isneginf(got[~where]).all()
  # Per pixel == per item: the pixels laid out as items give the same numbers.
  flat = np.asarray(getattr(acq, name)(jnp.asarray(lp.reshape(5, -1, 7), jnp.float32)))
  np.testing.assert_allclose(flat.reshape(3, 4, 6), np.asarray(getattr(acq, name)(
      jnp.asarray(lp, jnp.float32))), rtol=1e-6, atol=1e-7)


def test_element_masks_and_item_only_functions_are_checked(rng):
  lp = jnp.asarray(_log_probs(rng, (2, 3, 4, 5)), jnp.float32)
  with pytest.raises(ValueError, match=r"`where` must be a boolean mask of shape \(3, 4\)"):
    acq.bald(lp, where=jnp.ones(3, bool))
  with pytest.raises(ValueError, match=r"takes one prediction per item \(per-element scores "
                     r"reduce to one per item with reduce_scores\)"):
    acq.batchbald(lp, 2, key=None)
  with pytest.raises(ValueError, match=r"row \[sample 1, point 2, element \(3,\)\] has logsumexp"):
    acq.entropy(lp.at[1, 2, 3].add(1.0))


def _reduce_reference(scores, where, reduction, q):
  out = np.empty(scores.shape[0])
  for i, (s, w) in enumerate(zip(scores.reshape(len(scores), -1), where.reshape(len(where), -1))):
    v = s[w]
    if v.size == 0:
      out[i] = -np.inf
    elif reduction == "mean":
      out[i] = v.mean()
    elif reduction == "sum":
      out[i] = v.sum()
    elif reduction == "max":
      out[i] = v.max()
    else:
      m = max(1, math.ceil(round(q * v.size, 9)))
      out[i] = np.sort(v)[::-1][:m].mean()
  return out


@pytest.mark.parametrize("reduction", acq.REDUCTIONS)
@pytest.mark.parametrize("q", [0.1, 0.25, 1.0])
def test_reductions_match_a_reference_and_ignore_masked_elements(rng, reduction, q):
  scores = rng.random((6, 5, 6))
  where = rng.random((6, 5, 6)) > 0.4
  where[2] = False  # nothing left to score: -inf
  where[3] = True
  where[4, :, :] = False
  where[4, 0, 0] = True  # one element
  got = np.asarray(acq.reduce_scores(jnp.asarray(scores, jnp.float32), reduction=reduction,
                                     where=jnp.asarray(where), q=q))
  want = _reduce_reference(scores, where, reduction, q)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  # Masked elements do not count whatever their value; -inf elements (candidates masked by a
  # score) count as masked.
  noisy = np.where(where, scores, 1e6)
  again = np.asarray(acq.reduce_scores(jnp.asarray(noisy, jnp.float32), reduction=reduction,
                                       where=jnp.asarray(where), q=q))
  np.testing.assert_allclose(again, got, rtol=1e-6)
  masked = np.where(where, scores, -np.inf)
  np.testing.assert_allclose(np.asarray(acq.reduce_scores(jnp.asarray(masked, jnp.float32),
                                                          reduction=reduction, q=q)), got,
                             rtol=1e-6)


def test_reduction_known_cases_and_errors():
  s = jnp.asarray([[1.0, 2.0, 3.0, 4.0, 10.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
  assert float(acq.reduce_scores(s, reduction="top_q_mean", q=0.2)[0]) == 7.0  # (10 + 4) / 2
  assert float(acq.reduce_scores(s, reduction="top_q_mean", q=0.1)[0]) == 10.0
  assert float(acq.reduce_scores(s, reduction="mean")[0]) == 2.0
  assert float(acq.reduce_scores(s, reduction="max")[0]) == 10.0
  # q = 0.1 of 30 elements is exactly 3 (no float32 round-up to 4).
  s30 = jnp.arange(30.0)[None]
  assert float(acq.reduce_scores(s30, reduction="top_q_mean", q=0.1)[0]) == 28.0
  with pytest.raises(ValueError, match=r"unknown reduction 'median'; valid: \['mean', 'max', "
                     r"'sum', 'top_q_mean'\]"):
    acq.reduce_scores(s, reduction="median")
  with pytest.raises(ValueError, match=r"q must be a number in \(0, 1\], got 0"):
    acq.reduce_scores(s, reduction="top_q_mean", q=0)
  with pytest.raises(ValueError, match=r"`where` must be a boolean mask of the scores' shape"):
    acq.reduce_scores(s, where=jnp.ones((1, 3), bool))


@pytest.mark.parametrize("name,reduction", [("entropy", "top_q_mean"), ("bald", "mean"),
                                            ("margin", "max")])
def test_a_score_acquisition_reduces_pixel_scores_per_image(rng, name, reduction):
  """A registered score on [S, N, H, W, C] log-probs ranks images by its per-pixel score
  reduced with the acquisition's ``reduction`` option (float64 NumPy reference)."""
  lp = _log_probs(rng, (5, 12, 4, 6, 3))
  where = np.ones(12, bool)
  where[[1, 7]] = False
  elem = REFERENCES["predictive_entropy" if name == "entropy" else name](lp)
  want = _reduce_reference(elem, np.ones(elem.shape, bool), reduction, 0.25)
  want[~where] = -np.inf
  a = acq.get_acquisition(name, reduction=reduction, q=0.25)
  got = np.asarray(a.item_score({"log_probs": jnp.asarray(lp, jnp.float32)}, jnp.asarray(where)))
  np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-5)
  chosen, _ = a.select({}, {"log_probs": jnp.asarray(lp, jnp.float32)}, key=jax.random.key(0),
                       k=3, where=jnp.asarray(where))
  assert sorted(np.asarray(chosen).tolist()) == sorted(np.argsort(-want)[:3].tolist())
  # Pixels outside outputs["element_where"] (labeled already) take no part.
  ew = rng.random(elem.shape) > 0.5
  got_masked = np.asarray(a.item_score({"log_probs": jnp.asarray(lp, jnp.float32),
                                        "element_where": jnp.asarray(ew)}, None))
  np.testing.assert_allclose(got_masked, _reduce_reference(elem, ew, reduction, 0.25),
                             rtol=2e-4, atol=1e-5)
  with pytest.raises(ValueError, match=r"acquisition 'entropy': unknown reduction 'median'"):
    acq.get_acquisition("entropy", reduction="median")


def test_a_run_stored_before_the_reduction_options_resumes_at_their_defaults():
  from dal_jax import config as config_lib
  cfg = config_lib.default_config()
  cfg.acquisition = "entropy"
  current = config_lib.resolved(cfg)
  assert current["methods"] == {"entropy": {"q": 0.1, "reduction": "mean"}}
  before = {**current, "methods": {}}  # as runs stored it when entropy had no options
  assert config_lib.differences(before, current) == []
  other = {**current, "methods": {"entropy": {"q": 0.1, "reduction": "max"}}}
  assert config_lib.differences(other, current) == ["methods.entropy.reduction: 'max' -> 'mean'"]
