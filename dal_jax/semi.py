"""Training with insufficient labels: CEAL pseudo-labels.

CEAL (Wang, Zhang, Li, Zhang & Lin 2016, "Cost-Effective Active Learning for Deep Image
Classification"): besides the points sent to the oracle, unlabeled points the model is very sure
about — predictive entropy below ``δ_r`` — join the training set with their predicted label for
that round only. The threshold decays with the round, ``δ_r = δ_0 - r · d``, so fewer
pseudo-labels are trusted as the model sees more real labels.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from dal_jax.acquisition import _scores


class CEAL(NamedTuple):
  """CEAL settings: entropy threshold ``delta0`` (nats) decaying by ``decay`` per round."""

  delta0: float = 0.05
  decay: float = 0.005


def ceal_threshold(config: CEAL, round_index: int) -> float:
  """``δ_r = max(δ_0 - r · d, 0)``."""
  return max(config.delta0 - round_index * config.decay, 0.0)


def pseudo_labels(log_probs: ArrayLike, *, threshold: float,
                  where: ArrayLike | None = None) -> tuple[jax.Array, jax.Array]:
  """High-confidence pseudo-labels.

  Args:
    log_probs: ``[S, N, C]`` predictions on the pool.
    threshold: entropy threshold δ (nats); points with ``H[p̄] < δ`` are pseudo-labeled.
    where: ``[N]`` mask of eligible points (the unlabeled ones).

  Returns:
    ``(mask [N] bool, labels [N] int32)``: which points get a pseudo-label, and ``argmax p̄``.
  """
  log_probs = _scores.validate_log_probs(log_probs)
  if threshold < 0:
    raise ValueError(f"the CEAL entropy threshold must be >= 0, got {threshold}")
  where = _scores.validate_where(where, log_probs.shape[1])
  mean = _scores.mean_log_probs(log_probs)
  entropy = _scores.predictive_entropy(log_probs)
  mask = entropy < threshold
  if where is not None:
    mask = mask & where
  return mask, jnp.argmax(mean, -1).astype(jnp.int32)
