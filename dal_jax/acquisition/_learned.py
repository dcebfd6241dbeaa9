"""Acquisitions that learn to select: DAL, VAAL and WAAL.

Each trains a small network of its own (a labeled-vs-unlabeled classifier, a β-VAE with an
adversarial discriminator, a Wasserstein critic). That network is the acquisition's *method
state*: a pytree created by ``init(key, spec)``, passed in with the round's inputs, trained
a few hundred steps (warm-started from last round's parameters), and handed back so the loop keeps
it in ``LoopState.method_state`` and checkpoints it with the rest of the state.

Training is static-shaped: each step draws a batch of B/2 labeled and B/2 unlabeled candidates
(with replacement), and ``steps`` steps run as one jitted ``lax.scan``. These nets are dense, so
the compiled loop is fast on CPU too (the XLA:CPU slowdown seen for convolutions in loops does
not apply).

* **DAL** (Gissin & Shalev-Shwartz 2019, "Discriminative Active Learning"): a binary classifier
  on the task model's representation (``pre_logits``) learns labeled (1) vs unlabeled (0); the
  batch is chosen in ``sub_batches`` parts, each the unlabeled points the classifier finds most
  confidently *unlabeled*, which then count as labeled while the classifier retrains.
* **VAAL** (Sinha, Ebrahimi & Darrell 2019, "Variational Adversarial Active Learning"): a β-VAE
  on the raw inputs, trained on labeled and unlabeled points with reconstruction + β·KL and an
  adversarial term that makes the discriminator call every latent mean "labeled"; the
  discriminator learns labeled vs unlabeled on latent means. Acquire the points the discriminator
  is surest are unlabeled. Task-agnostic: it never reads the classifier.
* **TA-VAAL** (Kim et al. 2021, "Task-Aware Variational Adversarial Active Learning"): VAAL
  whose decoder and discriminator also see the normalised rank of LL4AL's predicted loss.
* **WAAL** (Shui et al. 2020, "Deep Active Learning: Unified and Principled Method for Query and
  Training"): a critic ``c`` on the task representation trained with the Wasserstein objective
  ``E_U[c] - E_L[c]`` and a one-sided gradient penalty ``max(0, ‖∇c‖ - 1)²`` (Petzka et al.
  2018; the two-sided penalty of Gulrajani et al. 2017 forces unit slopes where labeled and
  unlabeled points mix, which made the critic's ranking noise there); the score combines the
  paper's uncertainty upper bounds ``0.5 (‖log p‖₂ + Σ_c -log p_c)`` (smaller = more uncertain)
  with the critic: ``score = selection · c(h) - 0.5 (‖log p‖₂ + ‖log p‖₁)``. WAAL's joint
  adversarial training of the feature extractor is a loss term in ``dal_jax.methods.waal``.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from dal_jax.acquisition import _registry
from dal_jax.acquisition import _scores
from dal_jax.models import DenseStack


class Spec(NamedTuple):
  """What a learned acquisition may need to size its networks.

  Attributes:
    input_shape: one pool input, e.g. ``(28, 28, 1)``.
    pre_logits_dim: D of the task model's ``pre_logits``.
    num_classes: C.
  """

  input_shape: tuple[int, ...]
  pre_logits_dim: int
  num_classes: int


@functools.lru_cache(maxsize=None)
def _mlp(sizes: tuple[int, ...]):
  """``(init(key) -> params, apply(params, x) -> out)`` for an MLP with these layer sizes."""
  graphdef, _ = nnx.split(nnx.eval_shape(lambda: DenseStack(sizes, rngs=nnx.Rngs(0))))

  def init(key):
    return nnx.split(DenseStack(sizes, rngs=nnx.Rngs(params=key)))[1]

  def apply(params, x):
    return nnx.merge(graphdef, params)(x)

  return init, apply


def _flat(x: jax.Array) -> jax.Array:
  return x.reshape(x.shape[0], -1).astype(jnp.float32)


def _standardize(h: jax.Array, valid: jax.Array) -> jax.Array:
  """Features standardised with the mean / std of the valid rows (scale changes every round)."""
  w = valid.astype(h.dtype)[:, None]
  n = jnp.maximum(jnp.sum(w), 1.0)
  mean = jnp.sum(h * w, 0) / n
  std = jnp.sqrt(jnp.sum(((h - mean) ** 2) * w, 0) / n)
  return (h - mean) / (std + 1e-6)


def _two_class_batches(key, labeled, unlabeled, batch_size: int):
  """Indices of B/2 labeled and B/2 unlabeled candidates (drawn with replacement)."""
  k1, k2 = jax.random.split(key)
  half = batch_size // 2
  il = jax.random.choice(k1, labeled.shape[0], (half,), p=labeled / jnp.sum(labeled))
  iu = jax.random.choice(k2, unlabeled.shape[0], (half,), p=unlabeled / jnp.sum(unlabeled))
  return il, iu


def _check_two_sets(labeled: jax.Array, unlabeled: jax.Array, name: str) -> None:
  if not bool(jnp.any(labeled)) or not bool(jnp.any(unlabeled)):
    raise ValueError(f"{name} trains on labeled vs unlabeled candidates and needs both; got "
                     f"{int(jnp.sum(labeled))} labeled and {int(jnp.sum(unlabeled))} unlabeled "
                     "(the loop passes every labeled point with the candidates)")


def _check_inputs(x: jax.Array, name: str, what: str) -> jax.Array:
  x = jnp.asarray(x)
  if _scores._is_concrete(x) and not bool(jnp.all(jnp.isfinite(x))):
    raise ValueError(f"{name}: {what} contain NaN or inf")
  return x


# ---------------------------------------------------------------------------------------------
# LL4AL


def predicted_loss(predicted_loss: jax.Array, *, where=None) -> jax.Array:
  """LL4AL's acquisition (Yoo & Kweon 2019): the loss-prediction module's output ``[N]``
  (higher predicted loss = acquire). The module trains with the task model; see
  ``dal_jax.methods.ll4al``."""
  p = _check_inputs(predicted_loss, "ll4al", "predicted losses")
  if p.ndim != 1:
    raise ValueError(f"ll4al needs predicted losses shaped [N], got {p.shape}")
  return _scores.apply_where(p, _scores.validate_where(where, p.shape[0]))


def check_config(name: str, config) -> None:
  """Every field of a learned acquisition's config against its allowed range (the registry's
  :func:`dal_jax.acquisition.check_value` rules; batches hold at least one labeled and one
  unlabeled example, so ``batch_size >= 2``)."""
  for field, default in config._field_defaults.items():
    _registry.check_value(name, field, getattr(config, field), default)
  if config.batch_size < 2:
    raise ValueError(f"{name}: option batch_size must be an integer >= 2 (half labeled, half "
                     f"unlabeled), got {config.batch_size}")


# ---------------------------------------------------------------------------------------------
# DAL


class DALConfig(NamedTuple):
  hidden: tuple[int, ...] = (256, 256)
  steps: int = 200
  batch_size: int = 64
  learning_rate: float = 1e-3
  sub_batches: int = 10


def dal_init(key: jax.Array, spec: Spec, config: DALConfig = DALConfig()) -> dict[str, Any]:
  init, _ = _mlp((spec.pre_logits_dim, *config.hidden, 1))
  return {"classifier": init(key)}


@functools.partial(jax.jit, static_argnames=("apply", "steps", "batch_size", "learning_rate"))
def _fit_binary(params, key, h, positive, negative, *, apply, steps: int, batch_size: int,
                learning_rate: float):
  """``steps`` Adam steps of a logistic classifier ``apply(params, h)``: positive (1) vs negative
  (0) rows of ``h``, balanced batches. Returns ``(params, mean loss of the last 10% of steps)``."""
  tx = optax.adam(learning_rate)
  target = jnp.concatenate([jnp.ones(batch_size // 2), jnp.zeros(batch_size // 2)])

  def step(carry, k):
    params, opt = carry
    ip, ineg = _two_class_batches(k, positive, negative, batch_size)

    def loss_fn(p):
      logits = apply(p, h[jnp.concatenate([ip, ineg])])[:, 0]
      return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, target))

    loss, g = jax.value_and_grad(loss_fn)(params)
    updates, opt = tx.update(g, opt, params)
    return (optax.apply_updates(params, updates), opt), loss

  (params, _), losses = jax.lax.scan(step, (params, tx.init(params)), jax.random.split(key, steps))
  return params, jnp.mean(losses[-max(1, steps // 10):])


def dal(key: jax.Array, pre_logits: jax.Array, k: int, *, where: jax.Array,
        method_state: dict[str, Any], config: DALConfig = DALConfig()):
  """Discriminative active learning (Gissin & Shalev-Shwartz 2019).

  Args:
    key: PRNG key.
    pre_logits: ``[N, D]`` task-model representations of the candidates, labeled ones included.
    k: batch size.
    where: ``[N]`` bool, True for unlabeled candidates (False rows are the labeled set).
    method_state: ``{"classifier": params}`` from :func:`dal_init` (or the last round).
    config: :class:`DALConfig`.

  Returns:
    ``(indices [k], method_state)``.
  """
  check_config("dal", config)
  h = _check_inputs(pre_logits, "dal", "pre_logits")
  if h.ndim != 2:
    raise ValueError(f"dal needs pre_logits shaped [N, D], got {h.shape}")
  where = _scores.validate_where(where, h.shape[0])
  k = _check_k(k, where, "dal")
  _, apply = _mlp((h.shape[1], *config.hidden, 1))
  h = _standardize(h, jnp.ones(h.shape[0], bool))
  params = method_state["classifier"]
  sizes = [k // config.sub_batches + (i < k % config.sub_batches)
           for i in range(min(config.sub_batches, k))]
  labeled = ~where
  chosen = []
  for i, m in enumerate(sizes):
    _check_two_sets(labeled, ~labeled, "dal")
    params, _ = _fit_binary(params, jax.random.fold_in(key, i), h, labeled.astype(jnp.float32),
                            (~labeled).astype(jnp.float32), apply=apply, steps=config.steps,
                            batch_size=config.batch_size, learning_rate=config.learning_rate)
    p_unlabeled = -apply(params, h)[:, 0]  # logit of "unlabeled"
    idx = jax.lax.top_k(jnp.where(labeled, -jnp.inf, p_unlabeled), m)[1]
    chosen.append(idx)
    labeled = labeled.at[idx].set(True)
  return jnp.concatenate(chosen).astype(jnp.int32), {"classifier": params}


def _check_k(k: int, where: jax.Array, name: str) -> int:
  k = _scores.count(k)
  n = int(jnp.sum(where))
  if k > n:
    raise ValueError(f"{name}: k={k} must be in [1, {n}] (the number of unlabeled candidates)")
  return k


# ---------------------------------------------------------------------------------------------
# VAAL


class VAALConfig(NamedTuple):
  hidden: tuple[int, ...] = (512, 256)
  latent_dim: int = 32
  disc_hidden: tuple[int, ...] = (512, 512)
  kl_weight: float = 1.0  # β of the β-VAE
  adversary_weight: float = 1.0
  steps: int = 300
  batch_size: int = 64
  learning_rate: float = 5e-4


def _vaal_nets(input_dim: int, config: VAALConfig, cond_dim: int = 0):
  """Encoder, decoder and discriminator; ``cond_dim`` extra inputs of the decoder and the
  discriminator (TA-VAAL's loss rank)."""
  enc = _mlp((input_dim, *config.hidden, 2 * config.latent_dim))
  dec = _mlp((config.latent_dim + cond_dim, *config.hidden[::-1], input_dim))
  disc = _mlp((config.latent_dim + cond_dim, *config.disc_hidden, 1))
  return enc, dec, disc


def _vaal_state(key: jax.Array, spec: Spec, config: VAALConfig, cond_dim: int):
  size = 1
  for s in spec.input_shape:
    size *= int(s)
  (enc, _), (dec, _), (disc, _) = _vaal_nets(size, config, cond_dim)
  k1, k2, k3 = jax.random.split(key, 3)
  return {"encoder": enc(k1), "decoder": dec(k2), "discriminator": disc(k3)}


def vaal_init(key: jax.Array, spec: Spec, config: VAALConfig = VAALConfig()) -> dict[str, Any]:
  return _vaal_state(key, spec, config, 0)


def ta_vaal_init(key: jax.Array, spec: Spec, config: VAALConfig = VAALConfig()
                 ) -> dict[str, Any]:
  return _vaal_state(key, spec, config, 1)


def _with(z: jax.Array, cond: jax.Array | None) -> jax.Array:
  return z if cond is None else jnp.concatenate([z, cond], axis=-1)


def _vaal_losses(config: VAALConfig, applies, vae_params, disc_params, x, is_labeled, key,
                 cond=None):
  """(VAE loss, discriminator loss) of one batch (Sinha et al. 2019, Eqs. 1-4); with ``cond``
  ``[B, 1]`` the decoder and discriminator also see it (TA-VAAL's ranking condition)."""
  enc, dec, disc = applies
  stats = enc(vae_params["encoder"], x)
  mu, logvar = jnp.split(stats, 2, axis=-1)
  z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(key, mu.shape)
  recon = jnp.mean(jnp.sum((dec(vae_params["decoder"], _with(z, cond)) - x) ** 2, -1))
  kl = jnp.mean(-0.5 * jnp.sum(1.0 + logvar - mu**2 - jnp.exp(logvar), -1))
  bce = optax.sigmoid_binary_cross_entropy
  fool = jnp.mean(bce(disc(disc_params, _with(mu, cond))[:, 0], jnp.ones(x.shape[0])))
  vae_loss = recon + config.kl_weight * kl + config.adversary_weight * fool
  d_loss = jnp.mean(bce(disc(disc_params, _with(jax.lax.stop_gradient(mu), cond))[:, 0],
                        is_labeled.astype(jnp.float32)))
  return vae_loss, d_loss


@functools.partial(jax.jit, static_argnames=("config",))
def _fit_vaal(state, key, x, labeled, unlabeled, cond=None, *, config: VAALConfig):
  cond_dim = 0 if cond is None else cond.shape[1]
  (_, enc), (_, dec), (_, disc) = _vaal_nets(x.shape[1], config, cond_dim)
  applies = (enc, dec, disc)
  tx = optax.adam(config.learning_rate)
  vae = {"encoder": state["encoder"], "decoder": state["decoder"]}
  is_labeled = jnp.arange(config.batch_size) < config.batch_size // 2

  def step(carry, k):
    vae, d, opt_v, opt_d = carry
    kb, kz = jax.random.split(k)
    il, iu = _two_class_batches(kb, labeled, unlabeled, config.batch_size)
    rows = jnp.concatenate([il, iu])
    xb, cb = x[rows], None if cond is None else cond[rows]
    (v_loss, _), gv = jax.value_and_grad(
        lambda p: _vaal_losses(config, applies, p, d, xb, is_labeled, kz, cb), has_aux=True)(vae)
    upd, opt_v = tx.update(gv, opt_v, vae)
    vae = optax.apply_updates(vae, upd)
    d_loss, gd = jax.value_and_grad(
        lambda p: _vaal_losses(config, applies, vae, p, xb, is_labeled, kz, cb)[1])(d)
    upd, opt_d = tx.update(gd, opt_d, d)
    return (vae, optax.apply_updates(d, upd), opt_v, opt_d), (v_loss, d_loss)

  init = (vae, state["discriminator"], tx.init(vae), tx.init(state["discriminator"]))
  (vae, d, _, _), _ = jax.lax.scan(step, init, jax.random.split(key, config.steps))
  return {**vae, "discriminator": d}


def vaal_scores(method_state: dict[str, Any], x: jax.Array, *, where=None,
                config: VAALConfig = VAALConfig(), cond: jax.Array | None = None) -> jax.Array:
  """``-logit D(μ(x))``: higher = the discriminator is surer the point is unlabeled."""
  x = _flat(x)
  (_, enc), _, (_, disc) = _vaal_nets(x.shape[1], config, 0 if cond is None else cond.shape[1])
  mu = jnp.split(enc(method_state["encoder"], x), 2, axis=-1)[0]
  return _scores.apply_where(-disc(method_state["discriminator"], _with(mu, cond))[:, 0],
                             _scores.validate_where(where, x.shape[0]))


def vaal(key: jax.Array, x: jax.Array, *, where: jax.Array, method_state: dict[str, Any],
         config: VAALConfig = VAALConfig()):
  """Variational adversarial active learning (Sinha et al. 2019): trains the β-VAE and the
  discriminator on the candidates (``where`` = unlabeled, the rest labeled) and scores them.

  Args:
    key: PRNG key.
    x: ``[N, ...]`` candidate inputs, labeled ones included.
    where: ``[N]`` bool, True for unlabeled candidates.
    method_state: from :func:`vaal_init` or the last round.
    config: :class:`VAALConfig`.

  Returns:
    ``(scores [N], method_state)``; scores are ``-inf`` outside ``where``.
  """
  check_config("vaal", config)
  x = _flat(_check_inputs(x, "vaal", "inputs"))
  where = _scores.validate_where(where, x.shape[0])
  _check_two_sets(~where, where, "vaal")
  state = _fit_vaal(method_state, key, x, (~where).astype(jnp.float32),
                    where.astype(jnp.float32), config=config)
  return vaal_scores(state, x, where=where, config=config), state


def normalized_rank(values: jax.Array) -> jax.Array:
  """Ranks of ``values`` scaled to [0, 1] (0 = smallest), ``[N] -> [N, 1]``."""
  n = values.shape[0]
  ranks = jnp.argsort(jnp.argsort(values)).astype(jnp.float32)
  return (ranks / max(n - 1, 1))[:, None]


def ta_vaal(key: jax.Array, x: jax.Array, predicted_loss: jax.Array, *, where: jax.Array,
            method_state: dict[str, Any], config: VAALConfig = VAALConfig()):
  """Task-aware VAAL (Kim et al. 2021): VAAL whose decoder and discriminator are conditioned on
  the normalised rank of LL4AL's predicted loss among the candidates, so the discriminator's
  "unlabeled" verdict also reflects what the task model finds hard.

  Args:
    key: PRNG key.
    x: ``[N, ...]`` candidate inputs, labeled ones included.
    predicted_loss: ``[N]`` the task model's predicted losses (LL4AL's loss term,
      ``dal_jax.methods.ll4al``).
    where: ``[N]`` bool, True for unlabeled candidates.
    method_state: from ``ta_vaal_init`` or the last round.
    config: :class:`VAALConfig`.

  Returns:
    ``(scores [N], method_state)``.
  """
  check_config("ta_vaal", config)
  x = _flat(_check_inputs(x, "ta_vaal", "inputs"))
  loss = _check_inputs(predicted_loss, "ta_vaal", "predicted losses")
  if loss.shape != (x.shape[0],):
    raise ValueError(f"ta_vaal needs predicted losses shaped [{x.shape[0]}], got {loss.shape}")
  where = _scores.validate_where(where, x.shape[0])
  _check_two_sets(~where, where, "ta_vaal")
  cond = normalized_rank(loss)
  state = _fit_vaal(method_state, key, x, (~where).astype(jnp.float32),
                    where.astype(jnp.float32), cond, config=config)
  return vaal_scores(state, x, where=where, config=config, cond=cond), state


# ---------------------------------------------------------------------------------------------
# WAAL


class WAALConfig(NamedTuple):
  hidden: tuple[int, ...] = (256, 256)
  steps: int = 200
  batch_size: int = 64
  learning_rate: float = 1e-3
  gradient_penalty: float = 10.0
  selection: float = 10.0


def waal_init(key: jax.Array, spec: Spec, config: WAALConfig = WAALConfig()) -> dict[str, Any]:
  init, _ = _mlp((spec.pre_logits_dim, *config.hidden, 1))
  return {"critic": init(key)}


@functools.partial(jax.jit, static_argnames=("apply", "config"))
def _fit_critic(params, key, h, labeled, unlabeled, *, apply, config: WAALConfig):
  """Maximises ``E_U[c] - E_L[c]`` minus a one-sided gradient penalty on interpolates."""
  tx = optax.adam(config.learning_rate)

  def critic(p, x):
    return jax.nn.sigmoid(apply(p, x)[:, 0])

  def step(carry, k):
    params, opt = carry
    kb, ka = jax.random.split(k)
    il, iu = _two_class_batches(kb, labeled, unlabeled, config.batch_size)
    hl, hu = h[il], h[iu]
    alpha = jax.random.uniform(ka, (hl.shape[0], 1))
    mix = hl + alpha * (hu - hl)

    def loss_fn(p):
      grads = jax.vmap(jax.grad(lambda xi: critic(p, xi[None])[0]))(mix)
      gp = jnp.mean(jnp.maximum(jnp.sqrt(jnp.sum(grads**2, -1) + 1e-12) - 1.0, 0.0) ** 2)
      return -(jnp.mean(critic(p, hu)) - jnp.mean(critic(p, hl))) + config.gradient_penalty * gp

    loss, g = jax.value_and_grad(loss_fn)(params)
    updates, opt = tx.update(g, opt, params)
    return (optax.apply_updates(params, updates), opt), loss

  (params, _), _ = jax.lax.scan(step, (params, tx.init(params)),
                                jax.random.split(key, config.steps))
  return params


def waal_uncertainty(log_probs: jax.Array) -> jax.Array:
  """WAAL's uncertainty term ``0.5 (‖log p‖₂ + Σ_c -log p_c)`` of the mean prediction ``[N]``
  (smallest for the uniform distribution; ``log_probs`` shaped ``[S, N, C]``)."""
  lp = _scores.mean_log_probs(_scores.validate_log_probs(log_probs))
  lp = jnp.maximum(lp, jnp.log(jnp.finfo(lp.dtype).tiny))  # p = 0: very large, not infinite
  return 0.5 * (jnp.linalg.norm(lp, axis=-1) + jnp.sum(-lp, axis=-1))


def waal(key: jax.Array, log_probs: jax.Array, pre_logits: jax.Array, *, where: jax.Array,
         method_state: dict[str, Any], config: WAALConfig = WAALConfig()):
  """WAAL query scores (Shui et al. 2020): ``selection · c(h) - uncertainty``.

  Args:
    key: PRNG key.
    log_probs: ``[S, N, C]`` candidate predictions.
    pre_logits: ``[N, D]`` candidate representations, labeled ones included.
    where: ``[N]`` bool, True for unlabeled candidates.
    method_state: ``{"critic": params}`` from :func:`waal_init` or the last round.
    config: :class:`WAALConfig`.

  Returns:
    ``(scores [N], method_state)``; scores are ``-inf`` outside ``where``.
  """
  check_config("waal", config)
  h = _check_inputs(pre_logits, "waal", "pre_logits")
  where = _scores.validate_where(where, h.shape[0])
  _check_two_sets(~where, where, "waal")
  _, apply = _mlp((h.shape[1], *config.hidden, 1))
  h = _standardize(h, jnp.ones(h.shape[0], bool))
  params = _fit_critic(method_state["critic"], key, h, (~where).astype(jnp.float32),
                       where.astype(jnp.float32), apply=apply, config=config)
  critic = jax.nn.sigmoid(apply(params, h)[:, 0])
  scores = config.selection * critic - waal_uncertainty(log_probs)
  return _scores.apply_where(scores, where), {"critic": params}


# ---- registration: the acquisitions that train a network of their own ----


def learned_acquisition(name: str, config_type, init_fn, run_fn, needs: _registry.Needs, *,
                        batch: bool, selector: str = "top_k", beta: float = 1.0,
                        **options) -> _registry.Acquisition:
  """An acquisition that trains a network of its own (its state) from its leaves
  (``init_fn(key, spec, config)``; ``run_fn(key, *arrays, [k,] where,
  method_state, config) -> (scores or indices, state)``)."""
  config = config_type(**{k: tuple(v) if isinstance(v, list) else v for k, v in options.items()})
  check_config(name, config)

  def init(key, spec):
    return init_fn(key, spec, config)

  if batch:
    _registry.batch_only(name, selector)

    def select(state, outputs, *, key, k, where=None):
      return run_fn(key, *_registry.arguments(outputs, needs, name), k, where=where,
                    method_state=state, config=config)

    return _registry.Acquisition(name=name, init=init, select=select, needs=needs)

  def score(state, outputs, *, key, where):
    return run_fn(key, *_registry.arguments(outputs, needs, name), where=where, method_state=state,
                  config=config)

  return _registry.score_acquisition(name, score, needs, selector=selector, beta=beta, init=init)


def register_learned(name: str, config_type, init_fn, run_fn, needs: _registry.Needs, *,
                     batch: bool, doc: str) -> None:
  """Registers :func:`learned_acquisition` in the acquisition registry (options: the fields of
  ``config_type`` and, for score-type ones, the selector)."""
  defaults = dict(config_type._field_defaults)

  def make(**options):
    return learned_acquisition(name, config_type, init_fn, run_fn, needs, batch=batch, **options)

  _registry.register(name, make, needs=needs, options={**_registry.SELECTION_OPTIONS, **defaults},
                   doc=doc)


register_learned("dal", DALConfig, dal_init, dal, _registry.Needs(pre_logits=True), batch=True,
                 doc="labeled-vs-unlabeled classifier on pre-logits (Gissin & Shalev-Shwartz 2019)")
register_learned("vaal", VAALConfig, vaal_init, vaal, _registry.Needs(inputs=True), batch=False,
                 doc="β-VAE + adversarial discriminator on the inputs (Sinha et al. 2019)")
