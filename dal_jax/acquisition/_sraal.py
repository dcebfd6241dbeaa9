"""SRAAL, state-relabeling adversarial active learning (Zhang et al. 2020, "State-Relabeling
Adversarial Active Learning", CVPR).

VAAL's state discriminator learns labeled (state 1) vs unlabeled (state 0) on the latent means of
a β-VAE. SRAAL *relabels* the state of every unlabeled point with an online uncertainty
indicator, so the discriminator's target says how much of an unlabeled point the task model
already "knows": confident predictions get a state near λ (almost labeled), uncertain ones a
state near 0. Acquire the points the discriminator finds least labeled.

The indicator here is the min-max-normalised variance of the task model's mean predicted class
probabilities ``p`` (C classes)::

  OUI(x) = λ · Var(p) / Var_max,   Var(p) = (1/C) Σ_c (p_c - 1/C)²,   Var_max = (C - 1) / C²

(0 at the uniform prediction, λ at a one-hot one). Deviations from the paper: the task model's
(MC-averaged) predictions stand in for SRAAL's supervised target-learner branch of the
generator, and the initial set is whatever the run's protocol chooses (no k-center initial
sampling).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from dal_jax.acquisition import _learned
from dal_jax.acquisition import _registry
from dal_jax.acquisition import _scores


class SRAALConfig(NamedTuple):
  """VAAL's fields (``dal_jax.acquisition.VAALConfig``) and the indicator's scale λ."""

  hidden: tuple[int, ...] = (512, 256)
  latent_dim: int = 32
  disc_hidden: tuple[int, ...] = (512, 512)
  kl_weight: float = 1.0
  adversary_weight: float = 1.0
  steps: int = 300
  batch_size: int = 64
  learning_rate: float = 5e-4
  indicator_scale: float = 1.0

  @property
  def vaal(self) -> _learned.VAALConfig:
    return _learned.VAALConfig(**{k: getattr(self, k) for k in _learned.VAALConfig._fields})


def uncertainty_indicator(log_probs: jax.Array, *, scale: float = 1.0) -> jax.Array:
  """``λ · Var(p̄) / Var_max`` of the mean prediction, ``[S, N, C] -> [N]`` in ``[0, λ]``."""
  lp = _scores.validate_log_probs(log_probs)
  p = jnp.exp(_scores.mean_log_probs(lp))
  c = p.shape[-1]
  var = jnp.mean((p - 1.0 / c) ** 2, axis=-1)
  return scale * var / ((c - 1) / c**2)


@functools.partial(jax.jit, static_argnames=("config",))
def _fit(state, key, x, labeled, unlabeled, targets, *, config):
  vaal_config = config.vaal
  (_, enc), (_, dec), (_, disc) = _learned._vaal_nets(x.shape[1], vaal_config)
  tx = optax.adam(config.learning_rate)
  vae = {"encoder": state["encoder"], "decoder": state["decoder"]}
  half = config.batch_size // 2

  def step(carry, k):
    vae, d, opt_v, opt_d = carry
    kb, kz = jax.random.split(k)
    il, iu = _learned._two_class_batches(kb, labeled, unlabeled, config.batch_size)
    rows = jnp.concatenate([il, iu])
    state_target = jnp.concatenate([jnp.ones(half), targets[iu]])  # relabeled states
    losses = functools.partial(_learned._vaal_losses, vaal_config, (enc, dec, disc))
    gv = jax.grad(lambda p: losses(p, d, x[rows], state_target, kz)[0])(vae)
    upd, opt_v = tx.update(gv, opt_v, vae)
    vae = optax.apply_updates(vae, upd)
    gd = jax.grad(lambda p: losses(vae, p, x[rows], state_target, kz)[1])(d)
    upd, opt_d = tx.update(gd, opt_d, d)
    return (vae, optax.apply_updates(d, upd), opt_v, opt_d), None

  init = (vae, state["discriminator"], tx.init(vae), tx.init(state["discriminator"]))
  (vae, d, _, _), _ = jax.lax.scan(step, init, jax.random.split(key, config.steps))
  return {**vae, "discriminator": d}


def sraal(key, log_probs, x, *, where, method_state, config):
  """Trains the VAE and the state discriminator on relabeled states and scores the candidates.

  Args:
    key: PRNG key.
    log_probs: ``[S, N, C]`` the task model's predictions of the candidates.
    x: ``[N, ...]`` candidate inputs, labeled ones included.
    where: ``[N]`` bool, True for unlabeled candidates.
    method_state: VAAL's networks (``vaal_init``) or the last round's.
    config: ``SRAALConfig`` (VAAL's fields and ``indicator_scale`` λ).

  Returns:
    ``(scores [N], method_state)``: ``-logit D(μ(x))`` (least labeled first), ``-inf`` outside
    ``where``.
  """
  x = _learned._flat(_learned._check_inputs(x, "sraal", "inputs"))
  where = _scores.validate_where(where, x.shape[0])
  _learned._check_two_sets(~where, where, "sraal")
  if not config.indicator_scale >= 0:
    raise ValueError(f"sraal indicator_scale must be >= 0, got {config.indicator_scale}")
  targets = uncertainty_indicator(log_probs, scale=config.indicator_scale)
  state = _fit(method_state, key, x, (~where).astype(jnp.float32), where.astype(jnp.float32),
               targets, config=config)
  return _learned.vaal_scores(state, x, where=where, config=config.vaal), state


_learned.register_learned("sraal", SRAALConfig,
                 lambda key, spec, config: _learned.vaal_init(key, spec, config.vaal), sraal,
                 _registry.Needs(log_probs=True, inputs=True), batch=False,
                 doc="VAAL with unlabeled states relabeled by an uncertainty indicator "
                     "(Zhang et al. 2020)")
