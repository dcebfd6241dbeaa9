"""EPIG: the expected predictive information gain (Bickford Smith, Kirsch, Farquhar, Gal, Foster
& Rainforth, "Prediction-Oriented Bayesian Active Learning", AISTATS 2023).

BALD scores a candidate ``x`` by the information its label carries about the parameters; EPIG by
the information it carries about the predictions the model will be asked to make, on target
inputs ``x* ~ p*``::

  EPIG(x) = E_{p*(x*)} [ I(y; y* | x, x*) ]
          = E_{p*(x*)} [ Σ_{y, y*} p(y, y* | x, x*) log p(y, y* | x, x*) / (p(y | x) p(y* | x*)) ]

with the joint predictive ``p(y, y* | x, x*) = E_θ [p(y | x, θ) p(y* | x*, θ)]`` estimated from the
same S parameter samples θ_s (MC-dropout masks or ensemble members) for ``x`` and ``x*``. Without
a separate target set the unlabeled pool is the target distribution (the paper's pool-based
setting), so :func:`dal_jax.acquisition.get_acquisition` ``("epig")`` draws ``num_targets`` target
inputs from the candidates. Memory is ``O(N · chunk · C²)``: the targets are taken ``chunk`` at a
time.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from dal_jax.acquisition import _scores


def epig(log_probs: ArrayLike, target_log_probs: ArrayLike, *, where: ArrayLike | None = None,
         chunk: int = 16) -> jax.Array:
  """EPIG of every candidate against a sample of target inputs.

  Args:
    log_probs: ``[S, N, C]`` the candidates' log-probabilities under S parameter samples.
    target_log_probs: ``[S, M, C]`` the target inputs' under the same S samples.
    where: optional ``[N]`` candidate mask.
    chunk: targets processed together.

  Returns:
    ``[N]`` scores in nats, ``>= 0`` (round-off below 0 clipped); 0 for S = 1. ``-inf`` outside
    ``where``.
  """
  log_probs, where = _scores._prepare(log_probs, where)
  target = _scores.validate_log_probs(target_log_probs, "target_log_probs")
  if log_probs.ndim != 3 or target.ndim != 3 or target.shape[0] != log_probs.shape[0] or (
      target.shape[2] != log_probs.shape[2]):
    raise ValueError(f"epig needs candidate log-probs [S, N, C] and target log-probs [S, M, C] of "
                     f"the same S samples and C classes, got {log_probs.shape} and "
                     f"{target.shape}")
  s, m = target.shape[0], target.shape[1]
  p = jnp.exp(log_probs)  # [S, N, C]
  log_p_marg = _scores.mean_log_probs(log_probs)  # [N, C]
  log_q_marg = _scores.mean_log_probs(target)  # [M, C]
  q = jnp.exp(target)
  pad = -m % chunk
  q = jnp.pad(q, ((0, 0), (0, pad), (0, 0)))
  log_q_marg = jnp.pad(log_q_marg, ((0, pad), (0, 0)))
  valid = jnp.arange(m + pad) < m
  blocks = (m + pad) // chunk

  def one_block(b):
    qb = jax.lax.dynamic_slice_in_dim(q, b * chunk, chunk, axis=1)  # [S, k, C]
    lqb = jax.lax.dynamic_slice_in_dim(log_q_marg, b * chunk, chunk, axis=0)  # [k, C]
    vb = jax.lax.dynamic_slice_in_dim(valid, b * chunk, chunk)
    joint = jnp.einsum("snc,skd->nkcd", p, qb) / s  # [N, k, C, C]
    log_ratio = (jnp.log(jnp.where(joint > 0, joint, 1.0)) - log_p_marg[:, None, :, None]
                 - lqb[None, :, None, :])
    mi = jnp.sum(jnp.where(joint > 0, joint * log_ratio, 0.0), axis=(2, 3))  # [N, k]
    return jnp.sum(jnp.where(vb[None], mi, 0.0), axis=1)

  total = jax.lax.map(one_block, jnp.arange(blocks))  # [blocks, N]
  return _scores.apply_where(jnp.maximum(jnp.sum(total, axis=0) / m, 0.0), where)
