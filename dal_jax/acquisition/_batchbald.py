"""BatchBALD (Kirsch, van Amersfoort & Gal 2019): greedy maximisation of the joint mutual
information ``I[y_1, ..., y_b; θ]`` between a batch's labels and the model parameters.

For a batch ``B_{n-1}`` already chosen and a candidate ``x``::

  a(B_{n-1} ∪ {x}) = H[y_1, ..., y_{n-1}, y_x] - Σ_{j ∈ B} E_θ H[y_j | θ] - E_θ H[y_x | θ]

The conditional entropies are per-point; the joint entropy needs the joint predictive
``p(ŷ_{1:n-1}, y_x) = 1/S Σ_s p(ŷ_{1:n-1} | θ_s) p(y_x | θ_s)`` over label configurations ŷ. With S
*consistent* MC samples θ_s (the same dropout masks for every pool point), dal_jax keeps
``log P[s, m] = log p(ŷ^m | θ_s)`` for a set of configurations m:

* exact: all ``C^{n-1}`` configurations while ``C^n`` stays at most ``max_exact_configs``;
  ``H = -Σ_{m,c} p(m, c) log p(m, c)``;
* sampled: ``num_samples`` configurations drawn from the joint predictive (extended by one
  sampled label per chosen point, which is exact ancestral sampling), and the importance-weighted
  estimate ``H ≈ -1/M Σ_m Σ_c p(c | ŷ^m) log p(ŷ^m, c)``, unbiased for a fixed candidate.

The pool is processed in chunks (memory ``O(chunk · M · C)``), and ``P`` is rescaled per
configuration in log space, so long batches do not underflow.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from dal_jax.acquisition import _scores


class BatchBALDResult(NamedTuple):
  indices: jax.Array  # [k] pool indices in the order chosen
  joint_mi: jax.Array  # [k] estimated I[y_1..y_n; θ] of the first n chosen points


def _entropy_last(p):
  return -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), axis=-1)


@functools.partial(jax.jit, static_argnames=("exact",))
def _joint_entropies(log_config: jax.Array, probs_chunks: jax.Array, *, exact: bool) -> jax.Array:
  """Joint entropy of the chosen labels with each candidate's label.

  Args:
    log_config: ``[S, M]`` log p(configuration m | θ_s).
    probs_chunks: ``[n_chunks, S, chunk, C]`` candidate probabilities.
    exact: ``log_config`` enumerates all configurations (else they are samples from the joint).

  Returns:
    ``[n_chunks * chunk]`` joint entropies.
  """
  s = log_config.shape[0]
  offset = jnp.max(log_config, axis=0)  # [M]
  scaled = jnp.exp(log_config - offset)  # [S, M], max 1 per configuration
  log_pm = jnp.log(jnp.mean(scaled, axis=0)) + offset  # [M] log p(configuration)

  def chunk_entropy(p):  # p: [S, chunk, C]
    joint = jnp.einsum("sm,snc->nmc", scaled, p) / s  # [chunk, M, C], scaled by exp(offset)
    log_joint = jnp.log(jnp.maximum(joint, 1e-38)) + offset[None, :, None]
    if exact:
      w = jnp.exp(log_joint)
      return -jnp.sum(jnp.where(joint > 0, w * log_joint, 0.0), axis=(1, 2))
    w = jnp.exp(log_joint - log_pm[None, :, None])  # p(c | configuration m)
    return -jnp.mean(jnp.sum(jnp.where(joint > 0, w * log_joint, 0.0), axis=2), axis=1)

  return jax.lax.map(chunk_entropy, probs_chunks).reshape(-1)


def batchbald(log_probs: ArrayLike, k: int, *, key: jax.Array, where: ArrayLike | None = None,
              num_samples: int = 1000, max_exact_configs: int = 1000,
              chunk_size: int = 512) -> BatchBALDResult:
  """Selects a batch of ``k`` points by greedy BatchBALD.

  Args:
    log_probs: ``[S, N, C]`` log-probabilities from S consistent MC samples.
    k: batch size.
    key: PRNG key (used once configurations are sampled).
    where: ``[N]`` candidate mask.
    num_samples: M, sampled label configurations once exact enumeration is too large.
    max_exact_configs: enumerate configurations exactly while ``C^n <= max_exact_configs``.
    chunk_size: pool points per step of the joint-entropy computation.

  Returns:
    :class:`BatchBALDResult`: indices in the order chosen and the joint MI after each choice
    (non-decreasing, at most the sum of the individual BALD scores, up to sampling error).

  References:
    Kirsch, van Amersfoort & Gal, "BatchBALD: Efficient and Diverse Batch Acquisition for Deep
    Bayesian Active Learning", NeurIPS 2019.
  """
  log_probs = _scores.validate_log_probs(log_probs)
  s, n, c = log_probs.shape
  where = _scores.validate_where(where, n)
  candidates = jnp.ones(n, bool) if where is None else where
  n_candidates = int(jnp.sum(candidates))
  k = _scores.count(k)
  if k > n_candidates:
    raise ValueError(f"k={k} must be an int in [1, {n_candidates}] (unlabeled candidates)")
  num_samples = _scores.count(num_samples, "num_samples")
  chunk_size = _scores.count(chunk_size, "chunk_size")
  if max_exact_configs < c:
    raise ValueError(f"num_samples must be >= 1 and max_exact_configs >= C={c}")

  probs = jnp.exp(log_probs)
  cond_entropy = jnp.mean(_entropy_last(probs), axis=0)  # [N] E_θ H[y | θ]
  chunk = min(chunk_size, n)
  n_chunks = -(-n // chunk)
  padded = jnp.pad(probs, ((0, 0), (0, n_chunks * chunk - n), (0, 0)))
  probs_chunks = padded.reshape(s, n_chunks, chunk, c).transpose(1, 0, 2, 3)

  log_config = jnp.zeros((s, 1))  # the empty configuration
  exact = True
  available = candidates
  chosen, joint_mi = [], []
  cond_sum = 0.0
  for step in range(k):
    joint_h = _joint_entropies(log_config, probs_chunks, exact=exact)[:n]
    scores = jnp.where(available, joint_h - cond_entropy, -jnp.inf)
    best = int(jnp.argmax(scores))
    chosen.append(best)
    joint_mi.append(float(scores[best]) - cond_sum)
    cond_sum += float(cond_entropy[best])
    available = available.at[best].set(False)
    if step == k - 1:
      break
    log_p_best = jnp.log(jnp.maximum(probs[:, best, :], 1e-38))  # [S, C]
    if exact and log_config.shape[1] * c * c <= max_exact_configs:
      log_config = (log_config[:, :, None] + log_p_best[:, None, :]).reshape(s, -1)
      continue
    step_key = jax.random.fold_in(key, step)
    if exact:  # switch: draw M configurations from the exact joint over (m, c)
      joint = jax.nn.logsumexp(log_config[:, :, None] + log_p_best[:, None, :], axis=0)
      flat = jax.random.categorical(step_key, joint.reshape(-1), shape=(num_samples,))
      m_idx, c_idx = flat // c, flat % c
      log_config = log_config[:, m_idx] + log_p_best[:, c_idx]
      exact = False
    else:  # extend each sampled configuration by one label drawn given it
      cond = jax.nn.logsumexp(log_config[:, :, None] + log_p_best[:, None, :], axis=0)  # [M, C]
      c_idx = jax.random.categorical(step_key, cond, axis=-1)
      log_config = log_config + jnp.take_along_axis(log_p_best, c_idx[None, :], axis=1)
  return BatchBALDResult(indices=jnp.asarray(chosen, jnp.int32),
                         joint_mi=jnp.asarray(joint_mi, jnp.float32))
