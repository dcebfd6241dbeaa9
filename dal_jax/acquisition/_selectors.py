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


def _validate(scores: ArrayLike, k: int) -> jax.Array:
  scores = jnp.asarray(scores)
  if scores.ndim != 1:
    raise ValueError(f"scores must be shaped [N], got {scores.shape}")
  if not isinstance(k, int) or isinstance(k, bool) or k < 1:
    raise ValueError(f"k must be a positive int, got {k!r}")
  if not isinstance(scores, jax.core.Tracer):
    if bool(jnp.isnan(scores).any()):
      raise ValueError("scores contain NaN")
    n_candidates = int(jnp.sum(scores > -jnp.inf))
    if k > n_candidates:
      raise ValueError(f"cannot select k={k} points: only {n_candidates} unlabeled candidates "
                       f"remain in a pool of {scores.shape[0]}")
  elif k > scores.shape[0]:
    raise ValueError(f"k={k} is larger than the pool ({scores.shape[0]})")
  return scores


def top_k(scores: ArrayLike, k: int) -> jax.Array:
  """Indices of the k highest scores (ties broken towards the lower index).

  Args:
    scores: ``[N]`` scores, ``-inf`` for non-candidates.
    k: number of points to select (static).

  Returns:
    ``[k]`` int32 pool indices, distinct, in decreasing score order.

  Raises:
    ValueError: if k exceeds the number of candidates, or scores are not ``[N]`` / contain NaN.
  """
  scores = _validate(scores, k)
  return jax.lax.top_k(scores, k)[1]


def _gumbel_top_k(key: jax.Array, log_weights: jax.Array, k: int) -> jax.Array:
  g = jax.random.gumbel(key, log_weights.shape, dtype=log_weights.dtype)
  perturbed = jnp.where(log_weights > -jnp.inf, log_weights + g, -jnp.inf)
  return jax.lax.top_k(perturbed, k)[1]


_ZERO_WEIGHT_FLOOR = -1e30


def power_log_weights(scores: jax.Array, beta: float) -> jax.Array:
  if not isinstance(scores, jax.core.Tracer):
    finite = scores[scores > -jnp.inf]
    if bool((finite < 0).any()):
      raise ValueError("power sampling needs non-negative scores (e.g. BALD, entropy); use the "
                       "softmax or softrank selector for scores that can be negative (margin)")
  # Zero-score candidates get a finite floor far below any real log-weight: they are taken only
  # after every positive-score candidate, never replaced by a masked (-inf) point.
  log_w = jnp.maximum(beta * jnp.log(jnp.maximum(scores, 0.0)), _ZERO_WEIGHT_FLOOR)
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
  return _gumbel_top_k(key, power_log_weights(scores, beta), k)


def softmax_sample(key: jax.Array, scores: ArrayLike, k: int, *, beta: float = 1.0) -> jax.Array:
  """Samples k distinct indices with probability ∝ ``exp(beta * scores)``."""
  scores = _validate(scores, k)
  return _gumbel_top_k(key, softmax_log_weights(scores, beta), k)


def softrank_sample(key: jax.Array, scores: ArrayLike, k: int, *, beta: float = 1.0) -> jax.Array:
  """Samples k distinct indices with probability ∝ ``rank ** -beta`` (rank 1 = best score)."""
  scores = _validate(scores, k)
  return _gumbel_top_k(key, softrank_log_weights(scores, beta), k)


SELECTORS: dict[str, Callable[..., jax.Array]] = {
    "top_k": lambda key, scores, k, *, beta=1.0: top_k(scores, k),
    "power": power_sample,
    "softmax": softmax_sample,
    "softrank": softrank_sample,
}


def get_selector(name: str) -> Callable[..., jax.Array]:
  """Returns ``select(key, scores, k, *, beta) -> [k]`` for a selector name."""
  if name not in SELECTORS:
    raise ValueError(f"unknown selector {name!r}; valid selectors: {sorted(SELECTORS)}")
  return SELECTORS[name]
