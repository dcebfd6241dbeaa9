"""ALFA-Mix (Parvaneh et al. 2022) against a float64 NumPy reference of the mixing rule, the
recovered head, and the batch invariants."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dal_jax import acquisition as acq
from dal_jax.acquisition import _alfamix
from dal_jax.acquisition import _diversity


def _problem(rng, n=150, d=6, c=4, labeled=30):
  """Features, a known linear head, and the deterministic log-probs it gives (S = 1)."""
  h = rng.normal(size=(n, d))
  w = rng.normal(size=(d, c)) * 1.5
  b = rng.normal(size=c)
  logits = h @ w + b
  log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  where = np.ones(n, bool)
  where[rng.choice(n, labeled, replace=False)] = False
  return h, w, b, log_probs[None], where


def _reference_flips(h, w, b, where, eps):
  """float64: anchors by predicted class over labeled rows, optimal α per anchor, flips, and per
  point the smallest top-2 logit gap of its mixed points (near-tie check)."""
  logits = h @ w + b
  y = logits.argmax(-1)
  c = w.shape[1]
  anchors = {k: h[~where & (y == k)].mean(0) for k in range(c) if (~where & (y == k)).any()}
  flips, gaps = np.zeros(len(h), bool), np.full(len(h), np.inf)
  for i in range(len(h)):
    p = np.exp(logits[i] - logits[i].max())
    p /= p.sum()
    g = w @ (p - np.eye(c)[y[i]])
    for a in anchors.values():
      delta = a - h[i]
      v = np.maximum(delta * g, 0)
      alpha = eps * v / np.linalg.norm(v) if np.linalg.norm(v) > 0 else 0 * v
      ml = (h[i] + alpha * delta) @ w + b
      srt = np.sort(ml)
      gaps[i] = min(gaps[i], srt[-1] - srt[-2])
      flips[i] |= ml.argmax() != y[i]
  return flips, gaps


@pytest.mark.parametrize("trial", range(3))
def test_flips_match_a_float64_reference_and_the_batch_is_kmeans_among_them(trial):
  rng = np.random.default_rng(20 + trial)
  h, w, b, log_probs, where = _problem(rng)
  eps = [0.2, 0.5, 0.9][trial]
  w32, b32, explained = _alfamix.fit_head(jnp.asarray(log_probs, jnp.float32),
                                          jnp.asarray(h, jnp.float32))
  assert float(explained) > 0.9999
  # The recovered head gives the same centred logits (softmax ignores a per-row constant).
  cl = h @ w + b
  np.testing.assert_allclose(h @ np.asarray(w32) + np.asarray(b32),
                             cl - cl.mean(-1, keepdims=True), atol=2e-3)
  want, gap = _reference_flips(h, w, b, where, eps)
  clear = gap > 1e-3  # off every decision boundary: float32 must agree exactly there
  assert clear.sum() >= len(h) - 2
  hj = jnp.asarray(h, jnp.float32)
  predicted = jnp.argmax(hj @ w32 + b32, -1)
  anchor, present = _alfamix.anchors(hj, predicted, jnp.asarray(~where), w.shape[1])
  got, _ = _alfamix.mixing_flips(hj, w32, b32, anchor, present, jnp.float32(eps), chunk=64)
  np.testing.assert_array_equal(np.asarray(got)[clear], want[clear])
  want = np.asarray(got)  # (near-ties settled by float32, for the batch check below)
  k = 5
  pick = np.asarray(acq.alfa_mix(jnp.asarray(log_probs, jnp.float32), hj, k,
                                 key=jax.random.key(trial), where=jnp.asarray(where),
                                 epsilon=eps))
  pool = want & where
  assert pool.sum() >= k and pool[pick].all() and len(set(pick.tolist())) == k
  same = _diversity.kmeans_select(hj, k, key=jax.random.key(trial), where=jnp.asarray(pool))
  np.testing.assert_array_equal(pick, np.asarray(same))


def test_a_point_near_the_boundary_flips_and_one_deep_inside_does_not():
  """Two classes split by the first coordinate (logit gap 2 z₀); labeled anchors at ±2."""
  w = np.array([[1.0, -1.0], [0.0, 0.0]])
  b = np.zeros(2)
  h = np.array([[2.0, 0.0], [-2.0, 0.0], [-0.1, 0.3], [-3.0, 0.3]])  # anchors, near, deep
  logits = h @ w + b
  lp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  where = np.array([False, False, True, True])
  hj = jnp.asarray(h, jnp.float32)
  w32, b32, _ = _alfamix.fit_head(jnp.asarray(lp[None], jnp.float32), hj)
  anchor, present = _alfamix.anchors(hj, jnp.argmax(hj @ w32 + b32, -1), jnp.asarray(~where), 2)
  flips, rise = _alfamix.mixing_flips(hj, w32, b32, anchor, present, jnp.float32(0.3))
  assert np.asarray(flips)[2:].tolist() == [True, False]
  assert float(rise[2]) > 0 and float(rise[3]) > 0  # mixing toward the other class costs


def test_duplicated_labeled_rows_count_once_and_invariants():
  rng = np.random.default_rng(5)
  h, w, b, log_probs, where = _problem(rng, n=120)
  lab = np.nonzero(~where)[0]
  # The loop's padding: the labeled block repeats one labeled position.
  h_pad = np.concatenate([h, np.repeat(h[lab[:1]], 50, 0)])
  lp_pad = np.concatenate([log_probs, np.repeat(log_probs[:, lab[:1]], 50, 1)], axis=1)
  where_pad = np.concatenate([where, np.zeros(50, bool)])
  a = np.asarray(acq.alfa_mix(jnp.asarray(log_probs, jnp.float32), jnp.asarray(h, jnp.float32),
                              6, key=jax.random.key(0), where=jnp.asarray(where)))
  b_ = np.asarray(acq.alfa_mix(jnp.asarray(lp_pad, jnp.float32), jnp.asarray(h_pad, jnp.float32),
                               6, key=jax.random.key(0), where=jnp.asarray(where_pad)))
  np.testing.assert_array_equal(a, b_)
  idx = acq.acquire("alfa_mix", {"log_probs": jnp.asarray(log_probs, jnp.float32),
                                 "pre_logits": jnp.asarray(h, jnp.float32)},
                    key=jax.random.key(0), k=6, where=jnp.asarray(where))
  np.testing.assert_array_equal(np.asarray(idx), a)
  # Few flips: fewer than k candidates flip at a tiny epsilon; still exactly k distinct points.
  few = np.asarray(acq.alfa_mix(jnp.asarray(log_probs, jnp.float32), jnp.asarray(h, jnp.float32),
                                12, key=jax.random.key(0), where=jnp.asarray(where),
                                epsilon=1e-4))
  assert len(set(few.tolist())) == 12 and where[few].all()


def test_refusals_in_one_line():
  rng = np.random.default_rng(6)
  h, w, b, log_probs, where = _problem(rng, n=40, labeled=5)
  lp, hj = jnp.asarray(log_probs, jnp.float32), jnp.asarray(h, jnp.float32)
  with pytest.raises(ValueError, match="epsilon must be a number in"):
    acq.alfa_mix(lp, hj, 2, key=jax.random.key(0), where=jnp.asarray(where), epsilon=1.5)
  with pytest.raises(ValueError, match="needs labeled points"):
    acq.alfa_mix(lp, hj, 2, key=jax.random.key(0))
  with pytest.raises(ValueError, match="head is not linear"):
    acq.alfa_mix(jnp.asarray(jax.nn.log_softmax(rng.normal(size=(1, 40, 4)) * 3), jnp.float32),
                 hj, 2, key=jax.random.key(0), where=jnp.asarray(where))
