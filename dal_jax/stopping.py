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

from dal_jax.acquisition import _scores
from dal_jax.methods import RoundHook


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


def stabilizing_hook(rule: StabilizingPredictions) -> RoundHook:
  """Stabilizing predictions as a round hook: its state (``LoopState.methods["stabilizing"]``)
  is the stop set (``[P]`` pool positions drawn at the start), the last model's predictions on
  it (``[P]``, -1 before the first round) and the last ``window`` kappas (NaN: none yet). After
  training it records ``kappa``, ``kappa_window_mean`` and ``stabilized`` (and, with
  ``rule.stop``, stops the run)."""
  if rule.stop_set_size < 1 or rule.window < 1 or not -1.0 <= rule.threshold <= 1.0:
    raise ValueError(f"stabilizing predictions needs stop_set_size >= 1, window >= 1 and a "
                     f"threshold in [-1, 1] (kappa's range); got {rule}")

  def init(key, setup):
    if rule.stop_set_size > setup.pool_size:
      raise ValueError(f"stabilizing_stop_set={rule.stop_set_size} must be in [1, "
                       f"{setup.pool_size}] (the pool size)")
    stop_set = jnp.sort(jax.random.choice(key, setup.pool_size, (rule.stop_set_size,),
                                          replace=False)).astype(jnp.int32)
    return {"stop_set": stop_set, "predictions": jnp.full(stop_set.shape, -1, jnp.int32),
            "kappas": jnp.full((rule.window,), jnp.nan, jnp.float32)}

  def after_fit(states, ctx, variables):
    x = ctx.pool_inputs(jnp.stack([s["stop_set"] for s in states]))
    lp = ctx.predict(variables, x, per_seed=True)  # [G, E, P, C]
    new_states, metrics = [], []
    for s, lp_g in zip(states, lp):
      preds = jnp.argmax(_scores.mean_log_probs(lp_g), -1).astype(jnp.int32)
      have_previous = bool(jnp.all(s["predictions"] >= 0))
      kappa = (cohens_kappa(s["predictions"], preds, ctx.num_classes) if have_previous
               else jnp.float32(jnp.nan))
      window = update_window(s["kappas"], kappa)
      full = bool(jnp.all(jnp.isfinite(window)))
      stabilized = should_stop(window, rule.threshold)
      metrics.append({"kappa": float(kappa) if have_previous else None,
                      "kappa_window_mean": float(jnp.mean(window)) if full else None,
                      "stabilized": stabilized,
                      **({"stop": "stabilizing_predictions"} if rule.stop and stabilized else {})})
      new_states.append({**s, "predictions": preds, "kappas": window})
    return variables, new_states, metrics

  return RoundHook(name="stabilizing", init=init, after_fit=after_fit)
