"""DFAL: DeepFool active learning (Ducoffe & Precioso 2018, "Adversarial Active Learning for Deep
Networks: a Margin Based Approach").

A point's informativeness is how small a perturbation moves it across the decision boundary,
measured by DeepFool (Moosavi-Dezfooli, Fawzi & Frossard 2016). From ``x_0 = x`` with predicted
class k̂, each iteration linearises the logits ``f`` around ``x_i`` and steps to the nearest
linearised boundary::

  w_k = ∇f_k(x_i) - ∇f_k̂(x_i),   f'_k = f_k(x_i) - f_k̂(x_i)        (k ≠ k̂)
  l   = argmin_k |f'_k| / ‖w_k‖,   r_i = (|f'_l| + ε) / ‖w_l‖² · w_l

until the prediction changes (or ``max_iter``). The score is ``-‖Σ r_i‖`` (smaller distance =
acquire first). For a linear model one step lands exactly on the closest boundary, so the
distance is ``min_k |f'_k| / ‖w_k‖``. Jacobians come from ``jax.jacrev``, batched with ``vmap``
over a chunk of the pool; iterations are dispatched from Python (XLA:CPU runs convolutions in
compiled loops slowly).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from dal_jax.acquisition import _scores


@functools.partial(jax.jit, static_argnames=("apply", "eps"))
def _deepfool_step(variables, x0, x, r_total, active, label, *, apply, eps):
  def logits_fn(xi):
    return apply(variables, xi[None], train=False)[0][0]

  def one(xi):
    f = logits_fn(xi)  # [C]
    jac = jax.jacrev(logits_fn)(xi).reshape(f.shape[0], -1)  # [C, D]
    return f, jac

  f, jac = jax.vmap(one)(x)  # [B, C], [B, C, D]
  k_hat = label[:, None]
  f_diff = f - jnp.take_along_axis(f, k_hat, axis=1)  # [B, C]
  w = jac - jnp.take_along_axis(jac, k_hat[:, :, None], axis=1)  # [B, C, D]
  w_norm = jnp.linalg.norm(w, axis=-1)  # [B, C]
  ratio = jnp.abs(f_diff) / jnp.maximum(w_norm, 1e-12)
  ratio = jnp.where(jax.nn.one_hot(label, f.shape[1], dtype=bool), jnp.inf, ratio)
  l = jnp.argmin(ratio, axis=1)
  w_l = jnp.take_along_axis(w, l[:, None, None], axis=1)[:, 0]  # [B, D]
  f_l = jnp.take_along_axis(f_diff, l[:, None], axis=1)[:, 0]
  r = ((jnp.abs(f_l) + eps) / jnp.maximum(jnp.sum(w_l * w_l, -1), 1e-24))[:, None] * w_l
  r = jnp.where(active[:, None], r, 0.0).reshape(x.shape)
  r_total = r_total + r
  x_new = x0 + r_total
  still = jnp.argmax(jax.vmap(logits_fn)(x_new), -1) == label
  return x_new, r_total, active & still


def deepfool_perturbation(model, variables, x, *, max_iter: int = 20, eps: float = 1e-4,
                          chunk_size: int = 256) -> jax.Array:
  """The DeepFool perturbation ``r`` (``x + r`` changes each point's predicted class).

  Args: as :func:`deepfool_distance`.

  Returns:
    ``[N, ...]`` perturbations, shaped like ``x``.
  """
  out = []
  for start in range(0, x.shape[0], chunk_size):
    x0 = jnp.asarray(x[start:start + chunk_size])
    label = jnp.argmax(model.apply(variables, x0, train=False)[0], -1)
    xi, r_total, active = x0, jnp.zeros_like(x0), jnp.ones(x0.shape[0], bool)
    for _ in range(max_iter):
      xi, r_total, active = _deepfool_step(variables, x0, xi, r_total, active, label,
                                           apply=model.apply, eps=eps)
      if not bool(jnp.any(active)):
        break
    out.append(r_total)
  return jnp.concatenate(out)


def deepfool_distance(model, variables, x, *, max_iter: int = 20, eps: float = 1e-4,
                      chunk_size: int = 256) -> jax.Array:
  """``‖r‖`` of the DeepFool perturbation that changes each point's predicted class.

  Args:
    model: a :class:`dal_jax.models.Model` (deterministic inference is used).
    variables: its variables.
    x: ``[N, ...]`` inputs.
    max_iter: DeepFool iterations; points still not flipped keep the accumulated distance.
    eps: small overshoot added to each step so the point crosses the boundary.
    chunk_size: points per compiled call.

  Returns:
    ``[N]`` non-negative distances.
  """
  r = deepfool_perturbation(model, variables, x, max_iter=max_iter, eps=eps,
                            chunk_size=chunk_size)
  return jnp.linalg.norm(r.reshape(r.shape[0], -1), axis=-1)


def dfal_scores(model, variables, x, *, where=None, max_iter: int = 20,
                chunk_size: int = 256) -> jax.Array:
  """DFAL scores ``-‖r_DeepFool(x)‖`` (higher = closer to the boundary = acquire)."""
  d = deepfool_distance(model, variables, x, max_iter=max_iter, chunk_size=chunk_size)
  return _scores.apply_where(-d, _scores.validate_where(where, d.shape[0]))
