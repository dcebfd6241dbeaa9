"""Stopping rules beyond the label budget.

Stabilizing predictions (Bloodgood & Vijay-Shanker 2009, "A Method for Stopping Active Learning
Based on Stabilizing Predictions and the Need for User-Adjustable Stopping"): keep a fixed *stop
set* of unlabeled pool points; after each round compare the new model's predicted labels on it
with the previous round's by Cohen's kappa; stop once the mean kappa over the last ``window``
comparisons reaches ``threshold`` (0.99 in the paper, window 3). It needs no labels.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike


class StabilizingPredictions(NamedTuple):
  """Settings of the stabilizing-predictions rule.

  Attributes:
    stop_set_size: number of pool points in the stop set (fixed for the run).
    window: number of successive kappas averaged.
    threshold: stop when the window's mean kappa is at least this.
    stop: actually stop the run (False: only record kappa and when the rule would fire).
  """

  stop_set_size: int = 1000
  window: int = 3
  threshold: float = 0.99
  stop: bool = False


def cohens_kappa(a: ArrayLike, b: ArrayLike, num_classes: int) -> jax.Array:
  """Cohen's kappa (Cohen 1960) between two label vectors: ``(p_o - p_e) / (1 - p_e)`` with
  ``p_o`` the observed agreement and ``p_e = Σ_c f_a(c) f_b(c)`` the agreement expected from the
  two label frequencies. Defined as 1 when both vectors are the same single class
  (``p_e = 1``, ``p_o = 1``)."""
  a = jnp.asarray(a)
  b = jnp.asarray(b)
  if a.shape != b.shape or a.ndim != 1 or a.shape[0] == 0:
    raise ValueError(f"kappa needs two non-empty label vectors of one shape, got {a.shape} and "
                     f"{b.shape}")
  p_o = jnp.mean(a == b)
  f_a = jnp.bincount(a, length=num_classes) / a.shape[0]
  f_b = jnp.bincount(b, length=num_classes) / b.shape[0]
  p_e = jnp.sum(f_a * f_b)
  return jnp.where(p_e >= 1.0, jnp.where(p_o >= 1.0, 1.0, 0.0),
                   (p_o - p_e) / jnp.where(p_e >= 1.0, 1.0, 1.0 - p_e))


def update_window(window: jax.Array, kappa: jax.Array) -> jax.Array:
  """Pushes ``kappa`` into the ``[window]`` history (oldest first; NaN = no value yet)."""
  return jnp.concatenate([window[1:], jnp.reshape(kappa, (1,)).astype(window.dtype)])


def should_stop(window: jax.Array, threshold: float) -> bool:
  """The window is full (no NaN) and its mean kappa reaches ``threshold``."""
  return bool(jnp.all(jnp.isfinite(window)) and jnp.mean(window) >= threshold)
