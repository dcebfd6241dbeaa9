"""Pool inference in fixed-size chunks: deterministic and MC-dropout predictions.

The pool is processed ``chunk_size`` points at a time (the last chunk padded), so memory is bounded
and every pool size reuses one compiled program. MC-dropout samples come from ``jax.vmap`` over S
dropout keys; the same S keys serve every chunk, so sample s uses one fixed dropout mask sequence
across the whole pool (what consistent-MC batch methods such as BatchBALD need). Layers before
the first dropout do not depend on the key, so ``vmap`` computes them once, not S times.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from dal_jax.models import Model


class PoolOutputs(NamedTuple):
  """``log_probs``: ``[S, N, C]`` (S = 1 when deterministic); ``pre_logits``: ``[N, D]`` or None;
  ``extras``: named per-example outputs asked for (e.g. ``predicted_loss`` ``[N]``)."""

  log_probs: jax.Array
  pre_logits: jax.Array | None
  extras: dict[str, jax.Array] = {}


def term_outputs(terms, term_params, aux) -> dict[str, jax.Array]:
  """The named per-example outputs loss terms add (``dal_jax.training.LossTerm.outputs``)."""
  out = {}
  for t, p in zip(terms, term_params):
    if t.outputs is not None:
      out.update(t.outputs(p, aux))
  return out


@functools.partial(jax.jit, static_argnames=("apply", "mc_samples", "with_pre_logits",
                                             "outputs", "terms", "log_probs"))
def _predict_chunk(variables, term_params, x, keys, *, apply, mc_samples: int,
                   with_pre_logits: bool, outputs: tuple[str, ...] = (), terms=(),
                   log_probs=jax.nn.log_softmax):
  pre, extras = None, {}
  if mc_samples == 0 or with_pre_logits or outputs:
    logits, aux = apply(variables, x, train=False)
    pre = aux["pre_logits"] if with_pre_logits else None
    named = {**aux, **term_outputs(terms, term_params, aux)} if outputs else {}
    missing = [k for k in outputs if k not in named]
    if missing:
      raise ValueError(f"neither the model's aux nor the loss terms give {missing} (the model "
                       f"gives {sorted(aux)})")
    extras = {k: named[k] for k in outputs}
  to_log_probs = log_probs
  if mc_samples == 0:
    log_probs = to_log_probs(logits)[None]
  else:
    def one(key):
      return to_log_probs(apply(variables, x, train=False, mc=True, key=key)[0])
    log_probs = jax.vmap(one)(keys)
  return log_probs, pre, extras


def predict(model: Model, variables, x, *, key: jax.Array | None = None, mc_samples: int = 0,
            chunk_size: int = 1024, with_pre_logits: bool = False,
            outputs: tuple[str, ...] = (), terms=(), term_params=(),
            pad_to: int | None = None, log_probs=jax.nn.log_softmax) -> PoolOutputs:
  """Predicts a pool in chunks with one model.

  Args:
    model: a :class:`dal_jax.models.Model`.
    variables: its variables (``model.init``'s output).
    x: ``[N, ...]`` inputs (NumPy or device array).
    key: dropout key (required when ``mc_samples > 0``).
    mc_samples: S MC-dropout samples; 0 means one deterministic pass (S = 1 in the output).
    chunk_size: points per compiled call.
    with_pre_logits: also return the deterministic ``pre_logits`` ``[N, D]``.
    outputs: other named per-example outputs of the deterministic pass to return in
      ``extras``: entries of the model's ``aux`` or outputs of loss ``terms`` (e.g.
      ``("predicted_loss",)`` with LL4AL's term).
    terms, term_params: :class:`dal_jax.training.LossTerm` s and their parameters.
    pad_to: the compiled chunk length (default ``min(chunk_size, N)``); a caller that cuts a
      pool into chunks itself passes its chunk length so that the last chunk is padded alike.
    log_probs: the task's map from the model's outputs to per-element class log-probabilities
      (:attr:`dal_jax.tasks.Task.log_probs`).

  Returns:
    :class:`PoolOutputs` with ``log_probs`` ``[max(S, 1), N, C]``.
  """
  if mc_samples < 0:
    raise ValueError(f"mc_samples must be >= 0, got {mc_samples}")
  if mc_samples > 0 and key is None:
    raise ValueError("MC-dropout prediction (mc_samples > 0) needs a `key`")
  if chunk_size < 1:
    raise ValueError(f"chunk_size must be positive, got {chunk_size}")
  n = x.shape[0]
  if n == 0:
    raise ValueError("cannot predict an empty pool")
  keys = jax.random.split(key, mc_samples) if mc_samples else jnp.zeros((0,), jnp.uint32)
  chunk = min(chunk_size, n) if pad_to is None else pad_to
  to_log_probs, log_probs, pre, extras = log_probs, [], [], []
  for start in range(0, n, chunk):
    xc = x[start:start + chunk]
    valid = xc.shape[0]
    if valid < chunk:  # pad the last chunk to the compiled shape
      xc = jnp.concatenate([jnp.asarray(xc), jnp.zeros((chunk - valid, *xc.shape[1:]), xc.dtype)])
    lp, pl, ex = _predict_chunk(variables, term_params, jnp.asarray(xc), keys,
                                apply=model.apply, mc_samples=mc_samples,
                                with_pre_logits=with_pre_logits, outputs=tuple(outputs),
                                terms=tuple(terms), log_probs=to_log_probs)
    log_probs.append(lp[:, :valid])
    extras.append({k: v[:valid] for k, v in ex.items()})
    if with_pre_logits:
      pre.append(pl[:valid])
  return PoolOutputs(
      log_probs=jnp.concatenate(log_probs, axis=1),
      pre_logits=jnp.concatenate(pre, axis=0) if with_pre_logits else None,
      extras={k: jnp.concatenate([e[k] for e in extras]) for k in outputs})


@functools.partial(jax.jit, static_argnames=("apply",))
def _outputs_chunk(variables, x, *, apply):
  return apply(variables, x, train=False)[0]


def raw_outputs(model: Model, variables, x, *, chunk_size: int = 1024) -> jax.Array:
  """The model's deterministic outputs (logits, or a detector's maps) of ``x`` in chunks (one
  compiled program per model and chunk shape, reused across calls)."""
  return jnp.concatenate([_outputs_chunk(variables, jnp.asarray(x[s:s + chunk_size]),
                                         apply=model.apply)
                          for s in range(0, x.shape[0], chunk_size)])
