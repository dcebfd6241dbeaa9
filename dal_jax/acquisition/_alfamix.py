"""ALFA-Mix: active learning by feature mixing (Parvaneh, Abbasnejad, Teney, Haffari, van den
Hengel & Shi 2022, "Active Learning by Feature Mixing", CVPR).

An unlabeled point is a candidate when mixing a little of a labeled class's typical features into
its own features changes the model's prediction: its features hold something the labeled set has
not taught the model. For features ``z_u``, each anchor ``z*`` (the mean features of the labeled
points of one class) and a per-dimension mixing ratio ``α ∈ [0, 1)^D``,

    z̃ = α ⊙ z* + (1 - α) ⊙ z_u = z_u + α ⊙ (z* - z_u).

The ratio is the one that most increases the loss of the model's own prediction ``ŷ_u`` within
``‖α‖₂ ≤ ε``, to first order: the loss change is ``(α ⊙ (z* - z_u))ᵀ g`` with
``g = ∇_z ℓ(f(z_u), ŷ_u)``, maximised on ``{α ≥ 0, ‖α‖₂ ≤ ε}`` by ``α* = ε v⁺ / ‖v⁺‖₂``,
``v = (z* - z_u) ⊙ g`` (the paper's closed form, restricted to non-negative ratios). ``u`` is a
candidate when ``argmax f(z̃) ≠ ŷ_u`` for some anchor. k-means with k clusters on the candidates' features then returns the candidate
nearest each centre.

``f`` is the classifier's last layer. Batch methods read predictions and features, not the
model, so the head is recovered from them: the centred logits (log-probabilities minus their
class mean, which softmax ignores) are a linear function ``W z + b`` of the features for every
built-in classifier, and ``(W, b)`` is their least-squares fit over the scored rows — exact for a
deterministic model, the mean head under MC dropout. The loop passes one ensemble member's
``pre_logits``; the members' mean logits are then a linear function of them only as far as the
members agree. A fit that explains less than half of the centred logits' variance is refused
(with an ensemble: use MC dropout or ``ensemble_size=1``). Anchors group the labeled rows by the
model's predicted class (the labels are not passed to batch methods; the trained model fits its
labeled points). With fewer than k candidates, the k unlabeled points whose mixing raises the
loss most are clustered instead (our rule).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from dal_jax.acquisition import _diversity
from dal_jax.acquisition import _scores


def fit_head(log_probs: jax.Array, h: jax.Array):
  """``(W [D, C], b [C], explained)``: the least-squares linear head from features ``h [N, D]`` to
  the centred mean logits, and the fraction of their variance it explains."""
  logits = jnp.mean(jnp.maximum(log_probs, -50.0), axis=0)  # (a -inf entry: a very low logit)
  logits = logits - jnp.mean(logits, axis=-1, keepdims=True)
  design = jnp.concatenate([h, jnp.ones((h.shape[0], 1), h.dtype)], axis=1)
  coef = jnp.linalg.lstsq(design, logits)[0]
  resid = logits - design @ coef
  centred = logits - jnp.mean(logits, axis=0, keepdims=True)
  explained = 1.0 - jnp.sum(resid ** 2) / jnp.maximum(jnp.sum(centred ** 2), 1e-30)
  return coef[:-1], coef[-1], explained


def anchors(h: jax.Array, predicted: jax.Array, labeled: jax.Array, num_classes: int):
  """``([C, D] anchors, [C] present)``: the mean features of the labeled rows per predicted
  class; ``present`` marks classes with at least one labeled row."""
  onehot = jax.nn.one_hot(predicted, num_classes) * labeled[:, None]
  counts = jnp.sum(onehot, axis=0)
  return (onehot.T @ h) / jnp.maximum(counts, 1.0)[:, None], counts > 0


@functools.partial(jax.jit, static_argnames=("chunk",))
def mixing_flips(h, w, b, anchor, present, epsilon, *, chunk: int = 1024):
  """``([N] flipped, [N] loss increase)``: whether the optimal mixing with some anchor changes
  the head's prediction, and the largest cross-entropy increase of the prediction over anchors."""

  def block(z):
    logits = z @ w + b
    y = jnp.argmax(logits, axis=-1)
    p = jax.nn.softmax(logits)
    g = (p - jax.nn.one_hot(y, w.shape[1])) @ w.T  # ∇_z of -log softmax(W z + b)_y
    delta = anchor[None] - z[:, None]  # [n, A, D]
    v = jnp.maximum(delta * g[:, None], 0.0)
    norm = jnp.linalg.norm(v, axis=-1, keepdims=True)
    alpha = jnp.where(norm > 0, epsilon * v / jnp.where(norm > 0, norm, 1.0), 0.0)
    mixed = z[:, None] + alpha * delta
    mixed_logits = mixed @ w + b  # [n, A, C]
    flip = (jnp.argmax(mixed_logits, -1) != y[:, None]) & present[None]
    nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], -1)  # [n, 1]
    mixed_nll = -jnp.take_along_axis(jax.nn.log_softmax(mixed_logits), y[:, None, None], -1)
    rise = jnp.where(present[None], mixed_nll[..., 0] - nll, -jnp.inf)
    return jnp.any(flip, axis=1), jnp.max(rise, axis=1)

  outs = [block(h[s:s + chunk]) for s in range(0, h.shape[0], chunk)]
  return jnp.concatenate([o[0] for o in outs]), jnp.concatenate([o[1] for o in outs])


def alfa_mix(log_probs: ArrayLike, pre_logits: ArrayLike, k: int, *, key: jax.Array,
             where: ArrayLike | None = None, epsilon: float = 0.2, iters: int = 20,
             chunk_size: int = 1024) -> jax.Array:
  """ALFA-Mix (Parvaneh et al. 2022): candidates whose prediction changes under the optimal
  small mixing with a labeled class's mean features, then k-means among them (module docstring).

  Args:
    log_probs: ``[S, N, C]``.
    pre_logits: ``[N, D]`` the features the last layer reads.
    k: batch size.
    key: the k-means key.
    where: ``[N]`` candidate mask; the rows outside it are the labeled points (the anchors).
    epsilon: ``ε`` in (0, 1), the bound on ``‖α‖₂``.
    iters: Lloyd iterations of the k-means.
    chunk_size: pool rows mixed at once.

  Returns:
    ``[k]`` distinct candidate indices.
  """
  log_probs, h, candidates, k = _diversity.item_batch_inputs("alfa_mix", log_probs, k, where,
                                                             pre_logits)
  if not (isinstance(epsilon, (int, float)) and not isinstance(epsilon, bool)
          and 0.0 < epsilon < 1.0):
    raise ValueError(f"alfa_mix's epsilon must be a number in (0, 1), got {epsilon!r}")
  iters = _scores.count(iters, "iters")
  chunk = _scores.count(chunk_size, "chunk_size")
  labeled = _diversity.distinct_rows(h, ~candidates)
  if not bool(jnp.any(labeled)):
    raise ValueError("alfa_mix mixes unlabeled features with the labeled classes' mean features "
                     "and needs labeled points among the scored rows (where=False rows); none "
                     "were given")
  w, b, explained = fit_head(log_probs, h)
  if not float(explained) >= 0.5:  # (NaN too)
    raise ValueError(f"alfa_mix recovers the last layer as a linear map of pre_logits, but it "
                     f"explains only {float(explained):.0%} of the centred logits: the head is "
                     "not linear in these pre_logits (an ensemble's mean prediction is not one "
                     "member's head: use MC dropout or ensemble_size=1)")
  predicted = jnp.argmax(h @ w + b, axis=-1)
  anchor, present = anchors(h, predicted, labeled, log_probs.shape[-1])
  flipped, rise = mixing_flips(h, w, b, anchor, present, jnp.float32(epsilon), chunk=chunk)
  chosen = candidates & flipped
  top = jax.lax.top_k(jnp.where(candidates, rise, -jnp.inf), k)[1]
  most = jnp.zeros_like(candidates).at[top].set(True)
  pool = jnp.where(jnp.sum(chosen) >= k, chosen, most)
  return _diversity.kmeans_select(h, k, key=key, where=pool, iters=iters)
