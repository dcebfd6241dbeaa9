"""Selectors and the registry: exactly k distinct candidates, references, determinism, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from dal_jax import acquisition as acq
from dal_jax import methods
from tests.conftest import random_log_probs

N = 64  # fixed pool size keeps the property tests on one compiled shape


def _np_gumbel_top_k(log_w, gumbel, k):
  perturbed = np.where(np.isfinite(log_w), log_w + gumbel, -np.inf)
  return np.argsort(-perturbed, kind="stable")[:k]


def _ranks(scores):
  order = np.argsort(-scores, kind="stable")
  ranks = np.empty(len(scores))
  ranks[order] = np.arange(1, len(scores) + 1)
  return ranks


@given(seed=st.integers(0, 2**31 - 1), k=st.integers(1, 16), density=st.floats(0.3, 1.0),
       selector=st.sampled_from(sorted(acq.SELECTORS)))
@settings(max_examples=40, deadline=None)
def test_selection_is_k_distinct_candidates(seed, k, density, selector):
  rng = np.random.default_rng(seed)
  where = rng.random(N) < density
  where[rng.choice(N, k, replace=False)] = True  # at least k candidates
  scores = np.where(where, rng.random(N), -np.inf).astype(np.float32)
  if rng.random() < 0.3:
    scores = np.where(where, 0.0, -np.inf).astype(np.float32)  # degenerate: all tied at zero
  idx = np.asarray(acq.get_selector(selector)(jax.random.key(seed), jnp.asarray(scores), k))
  assert idx.shape == (k,)
  assert len(np.unique(idx)) == k
  assert where[idx].all(), "selected a non-candidate (labeled) point"
  assert ((idx >= 0) & (idx < N)).all()


def test_top_k_reference_and_permutation(rng):
  scores = rng.normal(size=N).astype(np.float32)
  idx = np.asarray(acq.top_k(jnp.asarray(scores), 10))
  np.testing.assert_array_equal(idx, np.argsort(-scores, kind="stable")[:10])
  perm = rng.permutation(N)
  idx_perm = np.asarray(acq.top_k(jnp.asarray(scores[perm]), 10))
  np.testing.assert_array_equal(perm[idx_perm], idx)


@pytest.mark.parametrize("selector", ["power", "softmax", "softrank"])
def test_stochastic_selectors_match_numpy_reference(selector, rng):
  scores = rng.random(N).astype(np.float32)
  scores[::7] = -np.inf
  key = jax.random.key(11)
  beta = 2.0
  finite = np.isfinite(scores)
  if selector == "power":
    log_w = np.where(finite, beta * np.log(np.where(finite, scores, 1.0)), -np.inf)
  elif selector == "softmax":
    log_w = np.where(finite, beta * scores, -np.inf)
  else:
    log_w = np.where(finite, -beta * np.log(_ranks(np.where(finite, scores, -np.inf))), -np.inf)
  gumbel = np.asarray(jax.random.gumbel(key, (N,), dtype=jnp.float32), np.float64)
  expected = _np_gumbel_top_k(log_w, gumbel, 12)
  got = np.asarray(acq.get_selector(selector)(key, jnp.asarray(scores), 12, beta=beta))
  np.testing.assert_array_equal(got, expected)


def test_power_sampling_frequencies_follow_scores():
  scores = jnp.array([0.1, 0.2, 0.3, 0.4, 0.0, -jnp.inf])
  keys = jax.random.split(jax.random.key(0), 4000)
  picks = np.asarray(jax.vmap(lambda k: acq.power_sample(k, scores, 1))(keys))[:, 0]
  freq = np.bincount(picks, minlength=6) / len(picks)
  np.testing.assert_allclose(freq[:4], [0.1, 0.2, 0.3, 0.4], atol=0.03)
  assert freq[4] == 0 and freq[5] == 0


def test_same_key_same_selection_different_key_differs(rng):
  scores = jnp.asarray(rng.random(N), jnp.float32)
  a = acq.softmax_sample(jax.random.key(1), scores, 8, beta=5.0)
  b = acq.softmax_sample(jax.random.key(1), scores, 8, beta=5.0)
  c = acq.softmax_sample(jax.random.key(2), scores, 8, beta=5.0)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(np.asarray(a), np.asarray(c))


def test_selector_errors():
  scores = jnp.array([0.5, -jnp.inf, 0.2])
  with pytest.raises(ValueError, match="only 2 unlabeled candidates"):
    acq.top_k(scores, 3)
  with pytest.raises(ValueError, match="integer >= 1"):
    acq.top_k(scores, 0)
  with pytest.raises(ValueError, match=r"\[N\]"):
    acq.top_k(jnp.zeros((2, 2)), 1)
  with pytest.raises(ValueError, match="NaN"):
    acq.top_k(jnp.array([0.1, jnp.nan]), 1)
  with pytest.raises(ValueError, match="non-negative"):
    acq.power_sample(jax.random.key(0), jnp.array([-0.5, 0.2]), 1)
  with pytest.raises(ValueError, match="unknown selector 'greedy'.*softrank"):
    acq.get_selector("greedy")


def test_registry_unknown_name_lists_valid():
  with pytest.raises(ValueError, match=r"unknown acquisition 'baldd'.*'bald'.*'entropy'"):
    acq.get_acquisition("baldd")


_SELECTING = [n for n in methods.names() if n not in ("mixup", "fixmatch", "ceal")]


@pytest.mark.parametrize("name", _SELECTING)
def test_every_registered_acquisition_selects_k_distinct_unlabeled(name, rng):
  lp = jnp.asarray(random_log_probs(rng, 5, N, 4), jnp.float32)
  if name == "ripu":  # scores pixels of images: [S, N, 3, 3, C]
    lp = jnp.asarray(random_log_probs(rng, 5, N * 9, 4), jnp.float32).reshape(5, N, 3, 3, 4)
  labeled = rng.random(N) < 0.5
  outputs = {"log_probs": lp, "pre_logits": jnp.asarray(rng.normal(size=(N, 8)), jnp.float32)}
  outputs["predicted_loss"] = jnp.asarray(rng.normal(size=N), jnp.float32)
  outputs["x"] = jnp.asarray(rng.normal(size=(N, 2, 2, 1)), jnp.float32)
  outputs["embeddings"] = jnp.asarray(rng.normal(size=(N, 6)), jnp.float32)
  if name == "alfa_mix":  # its input contract: log-probs of a linear head on the pre-logits
    logits = outputs["pre_logits"] @ jnp.asarray(rng.normal(size=(8, 4)), jnp.float32)
    outputs["log_probs"] = jax.nn.log_softmax(jnp.broadcast_to(logits, (5, N, 4)))
  options = {"steps": 10} if "steps" in methods.method_options(name) else {}
  a_ = methods.get_method(name, **options).acquisition
  if a_.needs.model:
    from dal_jax import models
    model = models.get_model("mlp", (2, 2, 1), 4, hidden=(8,))
    entry = acq.ACQUISITIONS.get(name)  # (methods are not registry entries)
    if entry is not None and entry.tasks == ("detection",):  # scores read a detector's boxes
      model = models.get_model("centernet", (8, 8, 1), 3, width=2)
      outputs["x"] = jnp.asarray(rng.normal(size=(N, 8, 8, 1)), jnp.float32)
    outputs.update(model=model, variables=model.init(jax.random.key(0), None))

  def run():
    state = a_.init(jax.random.key(0), acq.Spec((2, 2, 1), 8, 4))
    return np.asarray(acq.checked_select(a_, state, outputs, key=jax.random.key(0), k=7,
                                         where=jnp.asarray(~labeled))[0])

  a, b = run(), run()
  assert len(np.unique(a)) == 7 and not labeled[a].any()
  np.testing.assert_array_equal(a, b)


def test_broken_contract_is_caught_naming_the_acquisition():
  bad = acq.Acquisition(name="always_zero", init=lambda key, spec: {},
                        select=lambda state, outputs, *, key, k, where: (jnp.zeros(k, int), state),
                        needs=acq.Needs())
  with pytest.raises(ValueError, match="'always_zero' broke its contract"):
    acq.checked_select(bad, {}, {}, key=jax.random.key(0), k=3, where=jnp.ones(5, bool))


def test_options_are_bound_when_built_and_unknown_ones_refused():
  power = acq.get_acquisition("bald", selector="power", beta=2.0)
  lp = jnp.log(jax.nn.softmax(jax.random.normal(jax.random.key(0), (4, 50, 3))))
  picks = {tuple(np.asarray(power.select({}, {"log_probs": lp}, key=jax.random.key(i), k=5)[0]))
           for i in range(5)}
  assert len(picks) > 1  # stochastic selector bound at build time
  with pytest.raises(ValueError, match=r"bald has no options \['steps'\]"):
    acq.get_acquisition("bald", steps=3)
  with pytest.raises(ValueError, match="coreset chooses its batch itself"):
    acq.get_acquisition("coreset", selector="power")
  with pytest.raises(ValueError, match=r"dal has no options \['alpha'\].*'steps'"):
    methods.get_method("dal", alpha=1.0)


def test_top_k_of_a_score_picks_the_reference_argmax(rng):
  lp = random_log_probs(rng, 8, N, 5)
  p = np.exp(lp)
  bald = -np.sum(p.mean(0) * np.log(p.mean(0)), -1) + np.mean(np.sum(p * lp, -1), 0)
  idx = np.asarray(acq.acquire("bald", {"log_probs": jnp.asarray(lp, jnp.float32)},
                               key=jax.random.key(0), k=5))
  np.testing.assert_array_equal(np.sort(idx), np.sort(np.argsort(-bald)[:5]))


def test_register_a_custom_score():
  def neg_first_class(log_probs, *, where=None):
    scores = -jnp.exp(log_probs).mean(0)[:, 0]
    return scores if where is None else jnp.where(where, scores, -jnp.inf)

  acq.register_score("test_neg_first_class", neg_first_class)
  try:
    lp = jnp.log(jnp.array([[[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]]]))
    idx = acq.acquire("test_neg_first_class", {"log_probs": lp}, key=jax.random.key(0), k=1)
    assert int(idx[0]) == 1
    with pytest.raises(ValueError, match="already registered"):
      acq.register_score("test_neg_first_class", neg_first_class)
    with pytest.raises(ValueError, match="needs \\['log_probs'\\]"):
      acq.acquire("test_neg_first_class", {}, key=jax.random.key(0), k=1)
  finally:
    del acq.ACQUISITIONS["test_neg_first_class"]
