"""Per-sample acquisition scores: ``fn(log_probs [S, N, C], *, where=None) -> scores [N]``.

Conventions (shared by every score in dal_jax):

* ``log_probs`` holds log class probabilities for S stochastic forward passes (MC-dropout samples,
  ensemble members; S = 1 for a deterministic network), N pool points and C classes.
* Higher score means "acquire this point". Scores that are naturally "lower is better" (margin,
  confidence) are negated inside the function.
* ``where`` is an optional boolean ``[N]`` mask of *candidate* points (typically ``~labeled``);
  points outside it get ``-inf`` so no selector can pick them.
* Every score is rank-polymorphic: ``[S, N, ..., C] -> [N, ...]`` scores each element (a pixel
  of a segmentation, ``[S, N, H, W, C] -> [N, H, W]``) by the same formula, with ``where``
  shaped ``[N, ...]``; :func:`dal_jax.acquisition.reduce_scores` then reduces the elements of
  each item to one score.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike


def _is_concrete(x) -> bool:
  return not isinstance(x, jax.core.Tracer)


def count(k, name: str = "k", minimum: int = 1) -> int:
  """``k`` as a Python int (NumPy integers and concrete 0-d integer JAX arrays accepted);
  anything else, or ``k < minimum``, raises. ``k`` fixes an output shape, so a traced value is
  refused (pass it as a static argument of ``jit``)."""
  if isinstance(k, jax.core.Tracer):
    raise ValueError(f"{name} must be a static integer >= {minimum} (it fixes the output "
                     "shape), got a traced value; pass it as a static argument of jit")
  if isinstance(k, jax.Array) and k.ndim == 0 and jnp.issubdtype(k.dtype, jnp.integer):
    k = int(k)
  if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
    raise ValueError(f"{name} must be an integer >= {minimum}, got {k!r} ({type(k).__name__})")
  if k < minimum:
    raise ValueError(f"{name} must be an integer >= {minimum}, got {int(k)}")
  return int(k)


def check_beta(beta, selector: str) -> None:
  """The stochastic selectors' temperature must be a finite number ``>= 0`` (a traced value,
  e.g. under ``vmap``, is not checked)."""
  if isinstance(beta, jax.core.Tracer):
    return
  if isinstance(beta, (bool, np.bool_)) or not isinstance(beta, (int, float, np.number)) or (
      np.ndim(beta) != 0):
    raise ValueError(f"beta of the {selector} selector must be a number >= 0, got {beta!r}")
  if not (math.isfinite(float(beta)) and float(beta) >= 0):
    raise ValueError(f"beta of the {selector} selector must be a finite number >= 0, got "
                     f"{float(beta)} (beta=0 draws uniformly among the candidates)")


# Largest |logsumexp| accepted for a row of log-probabilities: float32 log_softmax is normalised
# to ~1e-6; 16-bit floats to ~1e-2.
_NORMALISATION_TOL = {2: 3e-2, 4: 1e-3, 8: 1e-3}


@jax.jit
def _log_prob_report(log_probs):
  """(NaN anywhere, first +inf position, worst |logsumexp| and its position)."""
  lse = jax.nn.logsumexp(log_probs, axis=-1)
  err = jnp.where(jnp.isnan(lse), jnp.inf, jnp.abs(lse))
  worst = jnp.argmax(err)
  pos_inf = jnp.isposinf(log_probs)
  return (jnp.isnan(log_probs).any(), pos_inf.any(), jnp.argmax(pos_inf), err.reshape(-1)[worst],
          worst, lse.reshape(-1)[worst])


def _at(index) -> str:
  """``sample s, point n`` (and ``element (...)`` for per-element scores)."""
  s, n, *rest = (int(i) for i in index)
  return f"sample {s}, point {n}" + (f", element {tuple(rest)}" if rest else "")


def validate_log_probs(log_probs: ArrayLike, name: str = "log_probs", *,
                       per_element: bool = False) -> jax.Array:
  """Checks rank and dtype (always) and, when the value is concrete (also a constant captured by
  a jitted function), that it holds log-probabilities: no NaN, no ``+inf``, every row's
  logsumexp 0 (``jax.nn.log_softmax`` outputs; ``-inf`` entries are fine). The shape is
  ``[S, N, C]``; with ``per_element`` also ``[S, N, ..., C]`` (per-pixel predictions)."""
  log_probs = jnp.asarray(log_probs)
  if log_probs.ndim < 3:
    raise ValueError(f"{name} must be shaped [S, N, C] (samples, pool points, classes)"
                     f"{', or [S, N, ..., C] per element' if per_element else ''}; got shape "
                     f"{log_probs.shape}. Use log_probs[None] for a deterministic model.")
  if log_probs.ndim > 3 and not per_element:
    raise ValueError(f"{name} must be shaped [S, N, C] (samples, pool points, classes); got "
                     f"shape {log_probs.shape}: this function takes one prediction per item "
                     "(per-element scores reduce to one per item with reduce_scores)")
  if log_probs.shape[0] < 1 or log_probs.shape[-1] < 2:
    raise ValueError(f"{name} needs S >= 1 samples and C >= 2 classes; got shape "
                     f"{log_probs.shape}")
  if not jnp.issubdtype(log_probs.dtype, jnp.floating):
    raise ValueError(f"{name} must be floating point, got {log_probs.dtype}")
  if not _is_concrete(log_probs) or log_probs.size == 0:
    return log_probs
  with jax.ensure_compile_time_eval():
    has_nan, has_inf, inf_at, err, worst, lse = _log_prob_report(log_probs)
  if bool(has_nan):
    raise ValueError(f"{name} contains NaN; check the model's outputs (diverged training?)")
  if bool(has_inf):
    *where, c = np.unravel_index(int(inf_at), log_probs.shape)
    raise ValueError(f"{name} contains +inf (at {_at(where)}, class {int(c)}); expected "
                     "log-probabilities (jax.nn.log_softmax of the logits), which are <= 0")
  tol = _NORMALISATION_TOL.get(log_probs.dtype.itemsize, 1e-3)
  if float(err) > tol:
    at = _at(np.unravel_index(int(worst), log_probs.shape[:-1]))
    raise ValueError(
        f"{name} must be normalised log-probabilities (jax.nn.log_softmax of the logits: each "
        f"row's logsumexp 0 within {tol:g}); row [{at}] has logsumexp "
        f"{float(lse):.4g}. Pass log_softmax(logits), not logits or probabilities.")
  return log_probs


def validate_where(where: ArrayLike | None, n) -> jax.Array | None:
  """``where`` as a boolean mask shaped ``(n,)`` (``n`` an int) or ``n`` (a shape)."""
  if where is None:
    return None
  shape = (n,) if isinstance(n, (int, np.integer)) else tuple(n)
  where = jnp.asarray(where)
  if where.shape != shape or where.dtype != jnp.bool_:
    raise ValueError(f"`where` must be a boolean mask of shape {shape}, got {where.dtype} "
                     f"{where.shape}")
  return where


def apply_where(scores: jax.Array, where: jax.Array | None) -> jax.Array:
  """Sets scores of points outside ``where`` to ``-inf``."""
  if where is None:
    return scores
  return jnp.where(where, scores, -jnp.inf)


def mean_log_probs(log_probs: jax.Array) -> jax.Array:
  """log of the predictive distribution averaged in probability space: ``[S, N, C] -> [N, C]``
  (``[S, N, ..., C] -> [N, ..., C]``)."""
  return jax.nn.logsumexp(log_probs, axis=0) - math.log(log_probs.shape[0])


def _entropy_from_log(log_p: jax.Array, axis: int = -1) -> jax.Array:
  p = jnp.exp(log_p)
  # 0 * log 0 = 0 (log_p may be -inf where p underflows to 0).
  return -jnp.sum(jnp.where(p > 0, p * log_p, 0.0), axis=axis)


def _prepare(log_probs, where):
  log_probs = validate_log_probs(log_probs, per_element=True)
  return log_probs, validate_where(where, log_probs.shape[1:-1])


def predictive_entropy(log_probs: ArrayLike, *, where: ArrayLike | None = None) -> jax.Array:
  """Entropy of the mean prediction, H[E_s p_s(y|x)] (Shannon 1948; "max entropy").

  Args:
    log_probs: ``[S, N, C]`` log class probabilities.
    where: optional ``[N]`` candidate mask.

  Returns:
    ``[N]`` scores in ``[0, log C]``; ``-inf`` outside ``where``.
  """
  log_probs, where = _prepare(log_probs, where)
  return apply_where(_entropy_from_log(mean_log_probs(log_probs)), where)


def least_confidence(log_probs: ArrayLike, *, where: ArrayLike | None = None) -> jax.Array:
  """``1 - max_c p̄_c`` (Lewis & Gale 1994; Settles 2009), p̄ the mean prediction.

  Returns:
    ``[N]`` scores in ``[0, 1 - 1/C]``.
  """
  log_probs, where = _prepare(log_probs, where)
  p = jnp.exp(mean_log_probs(log_probs))
  return apply_where(1.0 - jnp.max(p, axis=-1), where)


def margin(log_probs: ArrayLike, *, where: ArrayLike | None = None) -> jax.Array:
  """Negative margin between the two most probable classes of the mean prediction
  (Scheffer et al. 2001): ``-(p̄_(1) - p̄_(2))``, so the smallest margin scores highest.

  Returns:
    ``[N]`` scores in ``[-1, 0]``.
  """
  log_probs, where = _prepare(log_probs, where)
  p = jnp.exp(mean_log_probs(log_probs))
  top2 = jax.lax.top_k(p, 2)[0]
  return apply_where(top2[..., 1] - top2[..., 0], where)


def variation_ratios(log_probs: ArrayLike, *, where: ArrayLike | None = None) -> jax.Array:
  """Variation ratio of the S sampled votes (Freeman 1965; Gal et al. 2017):
  ``1 - (count of the modal class among argmax_c p_s) / S``.

  With S = 1 every point scores 0 (one vote has no variation); use least confidence there.

  Returns:
    ``[N]`` scores in ``[0, 1 - 1/min(S, C)]``.
  """
  log_probs, where = _prepare(log_probs, where)
  s, c = log_probs.shape[0], log_probs.shape[-1]
  votes = jax.nn.one_hot(jnp.argmax(log_probs, axis=-1), c, dtype=jnp.int32)  # [S, N, C]
  mode_count = jnp.max(jnp.sum(votes, axis=0), axis=-1)  # [N]
  return apply_where(1.0 - mode_count.astype(log_probs.dtype) / s, where)


def mean_std(log_probs: ArrayLike, *, where: ArrayLike | None = None) -> jax.Array:
  """Mean over classes of the standard deviation of p_s(y=c|x) over samples
  (Kampffmeyer et al. 2016). Zero for S = 1.

  Returns:
    ``[N]`` scores, ``>= 0``.
  """
  log_probs, where = _prepare(log_probs, where)
  p = jnp.exp(log_probs)
  # E[p²] - E[p]² cancels catastrophically in float32; shifted by the first sample (exactly 0
  # for identical samples, and accurate when the samples are close) it does not.
  d = p - p[:1]
  var = jnp.mean(d * d, axis=0) - jnp.mean(d, axis=0) ** 2
  return apply_where(jnp.mean(jnp.sqrt(jnp.maximum(var, 0.0)), axis=-1), where)


def bald(log_probs: ArrayLike, *, where: ArrayLike | None = None) -> jax.Array:
  """BALD: mutual information between the label and the model parameters (Houlsby et al. 2011;
  Gal et al. 2017), ``I[y; θ | x] = H[E_s p_s] - E_s H[p_s]``.

  By Jensen's inequality the value is ``>= 0``; round-off below zero is clipped to 0. It is 0 when
  all S samples agree (and always for S = 1).

  Returns:
    ``[N]`` scores in ``[0, log C]``.
  """
  log_probs, where = _prepare(log_probs, where)
  total = _entropy_from_log(mean_log_probs(log_probs))
  aleatoric = jnp.mean(_entropy_from_log(log_probs), axis=0)
  return apply_where(jnp.maximum(total - aleatoric, 0.0), where)


def vote_entropy(log_probs: ArrayLike, *, where: ArrayLike | None = None) -> jax.Array:
  """Query-by-committee vote entropy (Dagan & Engelson 1995; McCallum & Nigam 1998): entropy of
  the committee's hard votes, ``-Σ_c (V_c / S) log (V_c / S)`` with ``V_c`` the number of members
  (or MC samples) whose argmax is c.

  Returns:
    ``[N]`` scores in ``[0, log min(S, C)]``.
  """
  log_probs, where = _prepare(log_probs, where)
  s, c = log_probs.shape[0], log_probs.shape[-1]
  votes = jnp.sum(jax.nn.one_hot(jnp.argmax(log_probs, -1), c), axis=0) / s  # [N, C]
  return apply_where(-jnp.sum(jnp.where(votes > 0, votes * jnp.log(jnp.where(votes > 0, votes,
                                                                              1.0)), 0.0), -1),
                     where)


def consensus_kl(log_probs: ArrayLike, *, where: ArrayLike | None = None) -> jax.Array:
  """Query-by-committee KL divergence to the consensus (McCallum & Nigam 1998):
  ``1/S Σ_s KL(p_s || p̄)``, with p̄ the committee's mean prediction. Equal to BALD's mutual
  information (``H[p̄] - 1/S Σ_s H[p_s]``), computed here from its definition.

  Returns:
    ``[N]`` scores, ``>= 0``.
  """
  log_probs, where = _prepare(log_probs, where)
  mean = mean_log_probs(log_probs)[None]
  p = jnp.exp(log_probs)
  kl = jnp.sum(jnp.where(p > 0, p * (log_probs - mean), 0.0), -1)
  return apply_where(jnp.maximum(jnp.mean(kl, axis=0), 0.0), where)


def random_scores(key: jax.Array, n: int, *, where: ArrayLike | None = None) -> jax.Array:
  """Uniform random scores in ``[0, 1)`` (the random-sampling baseline)."""
  where = validate_where(where, n)
  return apply_where(jax.random.uniform(key, (n,)), where)


def foreground_random_scores(key: jax.Array, log_probs: ArrayLike, *, background: int = 0,
                             where: ArrayLike | None = None) -> jax.Array:
  """Random scores that put the predicted foreground first: ``u + [ŷ != background]`` per element
  (``u`` uniform in ``[0, 1)``, ``ŷ`` the argmax of the mean prediction), so every element the
  model calls foreground outranks every background one and the order within each group is
  uniformly random.

  Args:
    key: PRNG key.
    log_probs: ``[S, N, ..., C]`` log-probabilities (``S = 1`` for a deterministic model).
    background: the background class index, in ``[0, C)``.
    where: optional ``[N, ...]`` mask of the elements (the log-probs' shape without S and C).

  Returns:
    ``[N, ...]`` scores in ``[0, 2)``; ``-inf`` outside ``where``.
  """
  log_probs = validate_log_probs(log_probs, per_element=True)
  c = log_probs.shape[-1]
  if isinstance(background, bool) or not isinstance(background, (int, np.integer)) or not (
      0 <= background < c):
    raise ValueError(f"background={background!r} must be a class index in [0, {c})")
  where = validate_where(where, log_probs.shape[1:-1])
  pred = jnp.argmax(mean_log_probs(log_probs), axis=-1)
  u = jax.random.uniform(key, pred.shape)
  return apply_where(u + (pred != background).astype(u.dtype), where)
