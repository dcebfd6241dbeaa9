"""Per-element scores reduced to one score per queried item.

A segmentation model scores every pixel (``[N, H, W]`` from the rank-polymorphic scores of
:mod:`dal_jax.acquisition._scores`); an image is queried whole, so its pixels' scores reduce to
one number, as baal's ``reduction=`` does: the ``mean`` (every pixel counts), the ``max`` (the
single most uncertain pixel), the ``sum`` (large uncertain areas), or the ``top_q_mean`` (the mean
of the q most uncertain fraction of the pixels: uncertain regions without the dilution by easy
background that the mean suffers). Elements outside ``where`` (padding, pixels labeled already)
take no part; an item with no element left scores ``-inf``, so no selector picks it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

REDUCTIONS = ("mean", "max", "sum", "top_q_mean")


def reduce_scores(scores: ArrayLike, *, reduction: str = "mean", where: ArrayLike | None = None,
                  q: float = 0.1) -> jax.Array:
  """``[N, ...] -> [N]``: each item's element scores reduced to one.

  Args:
    scores: ``[N, ...]`` per-element scores (``[N]`` is returned as it is, masked).
    reduction: ``mean``, ``max``, ``sum`` or ``top_q_mean``.
    where: optional ``[N, ...]`` bool, the elements that count.
    q: for ``top_q_mean``, the fraction in ``(0, 1]`` of an item's counted elements averaged:
      the highest ``max(1, ceil(q · count))`` of them.

  Returns:
    ``[N]`` scores; ``-inf`` for items without a counted element.
  """
  if reduction not in REDUCTIONS:
    raise ValueError(f"unknown reduction {reduction!r}; valid: {list(REDUCTIONS)}")
  if reduction == "top_q_mean" and not (isinstance(q, (int, float)) and 0 < q <= 1):
    raise ValueError(f"q must be a number in (0, 1], got {q!r}")
  scores = jnp.asarray(scores)
  if scores.ndim < 1:
    raise ValueError(f"scores must be shaped [N, ...], got shape {scores.shape}")
  if where is None:
    where = jnp.ones(scores.shape, bool)
  where = jnp.asarray(where)
  if where.shape != scores.shape or where.dtype != jnp.bool_:
    raise ValueError(f"`where` must be a boolean mask of the scores' shape {scores.shape}, got "
                     f"{where.dtype} {where.shape}")
  n = scores.shape[0]
  flat = scores.reshape(n, -1)
  ok = where.reshape(n, -1) & ~jnp.isneginf(flat)
  count = jnp.sum(ok, axis=1)
  zeroed = jnp.where(ok, flat, 0.0)
  if reduction == "mean":
    out = jnp.sum(zeroed, axis=1) / jnp.maximum(count, 1)
  elif reduction == "sum":
    out = jnp.sum(zeroed, axis=1)
  elif reduction == "max":
    out = jnp.max(jnp.where(ok, flat, -jnp.inf), axis=1)
  else:
    ranked = -jnp.sort(-jnp.where(ok, flat, -jnp.inf), axis=1)  # counted elements first
    # ceil(q · count), at least 1; the factor keeps float32 round-off from adding an element
    # when q · count is a whole number (q = 0.1, count = 30: 3.0000002).
    take = jnp.maximum(jnp.ceil(q * count * (1 - 1e-6)).astype(jnp.int32), 1)
    csum = jnp.cumsum(jnp.where(jnp.isneginf(ranked), 0.0, ranked), axis=1)
    out = jnp.take_along_axis(csum, (take - 1)[:, None], axis=1)[:, 0] / take
  return jnp.where(count > 0, out, -jnp.inf)

