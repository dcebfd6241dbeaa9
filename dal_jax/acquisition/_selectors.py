"""Selectors: turn scores ``[N]`` into ``k`` distinct pool indices.

``top_k`` is the classic greedy choice. The stochastic selectors implement *stochastic batch
acquisition* (Kirsch, Farquhar, Atighehchian, Jesson, Branchaud-Charron & Gal, 2023, "Stochastic
Batch Acquisition: A Simple Baseline for Deep Active Learning"): sample k points without
replacement with probability proportional to

* power:    ``s_i ** β``           (scores must be ``>= 0``; for BALD, entropy, ...),
* softmax:  ``exp(β s_i)``,
* softrank: ``rank_i ** -β``       (rank 1 = highest score; scale-free),

using the Gumbel-top-k trick: ``top_k(log w_i + G_i)`` with i.i.d. Gumbel noise ``G`` draws k
items without replacement from the distribution ``w / Σ w`` (Kool et al. 2019).
Points whose score is ``-inf`` (masked by ``where``) are never selected.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from dal_jax.acquisition._scores import check_beta, count


def _validate(scores: ArrayLike, k: int) -> jax.Array:
  scores = jnp.asarray(scores)
  if scores.ndim != 1:
    raise ValueError(f"scores must be shaped [N], got {scores.shape}")
  k = count(k)
  if isinstance(scores, jax.core.Tracer):
    if k > scores.shape[0]:
      raise ValueError(f"k={k} is larger than the pool ({scores.shape[0]})")
    return scores
  with jax.ensure_compile_time_eval():  # also a constant captured by a jitted caller
    has_nan, has_inf = bool(jnp.isnan(scores).any()), bool(jnp.isposinf(scores).any())
    n_candidates = int(jnp.sum(scores > -jnp.inf))
  if has_nan:
    raise ValueError("scores contain NaN")
  if has_inf:
    raise ValueError("scores contain +inf; scores must be finite for candidates and -inf for "
                     "points that may not be selected")
  if k > n_candidates:
    raise ValueError(f"cannot select k={k} points: only {n_candidates} unlabeled candidates "
                     f"remain in a pool of {scores.shape[0]}")
  return scores


def top_k(scores: ArrayLike, k: int) -> jax.Array:
  """Indices of the k highest scores (ties broken towards the lower index).

  Args:
    scores: ``[N]`` scores, ``-inf`` for non-candidates.
    k: number of points to select (static).

  Returns:
    ``[k]`` int32 pool indices, distinct, in decreasing score order. Under ``jit`` (scores not
    known when tracing) slots that no candidate can fill are -1, never a masked point.

  Raises:
    ValueError: if k exceeds the number of candidates, or scores are not ``[N]`` / contain NaN.
  """
  scores = _validate(scores, k)
  values, idx = jax.lax.top_k(scores, count(k))
  return _no_masked(values, idx)


def _no_masked(values: jax.Array, idx: jax.Array) -> jax.Array:
  # Outside jit a k larger than the candidates is refused (``_validate``); under jit the scores
  # are unknown until run time, and the slots no candidate fills hold -1 rather than a masked
  # (already labeled) point.
  return jnp.where(values > -jnp.inf, idx, -1)


_ZERO_WEIGHT_FLOOR = -1e30


def _gumbel_top_k(key: jax.Array, log_weights: jax.Array, candidates: jax.Array,
                  k: int) -> jax.Array:
  # Candidates' log-weights are kept finite (an overflowing beta * score must neither drop a
  # candidate below the masked points nor tie them), masked points stay -inf.
  g = jax.random.gumbel(key, log_weights.shape, dtype=log_weights.dtype)
  log_weights = jnp.clip(log_weights, _ZERO_WEIGHT_FLOOR, -_ZERO_WEIGHT_FLOOR)
  perturbed = jnp.where(candidates, log_weights + g, -jnp.inf)
  return _no_masked(*jax.lax.top_k(perturbed, k))


def power_log_weights(scores: jax.Array, beta: float) -> jax.Array:
  if not isinstance(scores, jax.core.Tracer):
    with jax.ensure_compile_time_eval():
      negative = bool(((scores < 0) & (scores > -jnp.inf)).any())
    if negative:
      raise ValueError("power sampling needs non-negative scores (e.g. BALD, entropy); use the "
                       "softmax or softrank selector for scores that can be negative (margin)")
  # Zero-score candidates get a finite floor far below any real log-weight: they are taken only
  # after every positive-score candidate, never replaced by a masked (-inf) point. With beta = 0
  # every candidate weighs s**0 = 1 (0**0 = 1): a uniform draw.
  positive = scores > 0
  log_w = jnp.where(positive, beta * jnp.log(jnp.where(positive, scores, 1.0)),
                    jnp.where(beta == 0, 0.0, _ZERO_WEIGHT_FLOOR))
  return jnp.where(scores > -jnp.inf, log_w, -jnp.inf)


def softmax_log_weights(scores: jax.Array, beta: float) -> jax.Array:
  return jnp.where(scores > -jnp.inf, beta * scores, -jnp.inf)


def softrank_log_weights(scores: jax.Array, beta: float) -> jax.Array:
  order = jnp.argsort(-scores, stable=True)
  ranks = jnp.empty_like(order).at[order].set(jnp.arange(1, scores.shape[0] + 1))
  return jnp.where(scores > -jnp.inf, -beta * jnp.log(ranks.astype(scores.dtype)), -jnp.inf)


def power_sample(key: jax.Array, scores: ArrayLike, k: int, *, beta: float = 1.0) -> jax.Array:
  """Samples k distinct indices with probability ∝ ``scores ** beta`` (power acquisition).

  Zero scores have (practically) zero probability: they are chosen, lowest index first, only once
  every positive-score candidate has been taken.

  Returns:
    ``[k]`` int32 pool indices, distinct.
  """
  scores = _validate(scores, k)
  check_beta(beta, "power")
  return _gumbel_top_k(key, power_log_weights(scores, beta), scores > -jnp.inf, count(k))


def softmax_sample(key: jax.Array, scores: ArrayLike, k: int, *, beta: float = 1.0) -> jax.Array:
  """Samples k distinct indices with probability ∝ ``exp(beta * scores)``."""
  scores = _validate(scores, k)
  check_beta(beta, "softmax")
  return _gumbel_top_k(key, softmax_log_weights(scores, beta), scores > -jnp.inf, count(k))


def softrank_sample(key: jax.Array, scores: ArrayLike, k: int, *, beta: float = 1.0) -> jax.Array:
  """Samples k distinct indices with probability ∝ ``rank ** -beta`` (rank 1 = best score)."""
  scores = _validate(scores, k)
  check_beta(beta, "softrank")
  return _gumbel_top_k(key, softrank_log_weights(scores, beta), scores > -jnp.inf, count(k))


SELECTORS: dict[str, Callable[..., jax.Array]] = {
    "top_k": lambda key, scores, k, *, beta=1.0: top_k(scores, k),
    "power": power_sample,
    "softmax": softmax_sample,
    "softrank": softrank_sample,
}


def get_selector(name: str, beta: float | None = None) -> Callable[..., jax.Array]:
  """Returns ``select(key, scores, k, *, beta) -> [k]`` for a selector name; ``beta``, when
  given, is checked now (a finite number >= 0)."""
  if name not in SELECTORS:
    raise ValueError(f"unknown selector {name!r}; valid selectors: {sorted(SELECTORS)}")
  if beta is not None:
    check_beta(beta, name)
  return SELECTORS[name]
