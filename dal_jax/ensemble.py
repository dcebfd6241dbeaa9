"""Stacked models: deep ensembles and parallel seeds, trained together in one jitted program.

A stack of M models is one pytree whose leaves have a leading axis of size M, initialised with
``jax.vmap(model.init)(keys)`` and trained by a ``jax.vmap``-ed train step: member m draws its own
batches and dropout masks from its own key, so member m of :func:`fit_stacked` equals
:func:`dal_jax.training.fit` run alone with ``keys[m]``. Each model may have its own labeled
mask (``labeled [M, N]``), which is how seeds run in parallel; an ensemble shares one mask.

On several devices the member axis is sharded when M is a multiple of the device count, the
batch axis otherwise (:mod:`dal_jax.parallel`); the program is the same.

On a single CPU device the models are run one after another through the single-model programs
instead (``vectorize=None`` picks this automatically): XLA:CPU executes a ``vmap``-ed convolution
(a grouped convolution) several times slower than the separate ones, measured on the 2-core CI
machine (Gal CNN: 2 stacked members trained in 2.3x the time of two separate trainings; MC
scoring of 2 stacked seeds ~20x slower). Results are identical either way.

References: Lakshminarayanan et al. 2017 (deep ensembles); Beluch et al. 2018 (ensembles for
active learning); Pop & Fulop 2018 (DEBAL: ensembles of MC-dropout networks).
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dal_jax import parallel
from dal_jax import predict as predict_lib
from dal_jax import training
from dal_jax.models import Model


class StackedFit(NamedTuple):
  variables: Any  # leaves [M, ...]
  steps: np.ndarray  # [M] steps each model trained for
  best_val_accuracy: np.ndarray  # [M]
  train_loss: np.ndarray  # [M]


@functools.partial(jax.jit, static_argnames=("train_step", "batch_size", "mesh", "layout"))
def _stacked_step(states, keys, x, y, p, *, train_step, batch_size, mesh, layout):
  constrain = None
  if layout == "batch":
    constrain = functools.partial(parallel.batch_constraint, mesh=mesh, axis=0)

  def one(state, key, y_m, p_m):
    return training.sample_batch_step(state, key, x, y_m, p_m, train_step=train_step,
                                      batch_size=batch_size, constrain=constrain)

  return jax.vmap(one)(states, keys, y, p)


@functools.partial(jax.jit, static_argnames=("apply",))
def _stacked_accuracy(variables, x, y, *, apply):
  def one(v):
    return jnp.mean(jnp.argmax(apply(v, x, train=False)[0], -1) == y)
  return jax.vmap(one)(variables)


def _select(mask, new, old):
  """Per-model choice between two stacked pytrees (``mask [M]``)."""
  def pick(a, b):
    return jnp.where(mask.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)
  return jax.tree.map(pick, new, old)


def init_stacked(model: Model, keys: jax.Array, x) -> Any:
  """``vmap(model.init)`` over ``keys [M]``: variables with a leading model axis."""
  return jax.vmap(lambda k: model.init(k, x[:1]))(keys)


def _vectorize(vectorize: bool | None, mesh) -> bool:
  if vectorize is not None:
    return vectorize
  return (mesh is not None and mesh.size > 1) or jax.default_backend() != "cpu"


def _stack(trees):
  return jax.tree.map(lambda *v: jnp.stack(v), *trees)


def _index(tree, i):
  return jax.tree.map(lambda v: v[i], tree)


def fit_stacked(model: Model, x, y, labeled, *, keys: jax.Array, config: training.TrainConfig,
                val: tuple[Any, Any] | None = None, init_variables=None,
                mesh: jax.sharding.Mesh | None = None,
                vectorize: bool | None = None) -> StackedFit:
  """Trains M models at once; model m is exactly ``training.fit(..., key=keys[m])``.

  Args:
    model: the model.
    x: ``[N, ...]`` pool inputs, shared by all models.
    y: ``[N]`` or ``[M, N]`` labels (entries outside ``labeled`` are ignored).
    labeled: ``[N]`` (ensemble) or ``[M, N]`` (parallel seeds) trainable masks.
    keys: ``[M]`` PRNG keys, one per model.
    config: :class:`dal_jax.training.TrainConfig` (early stopping is per model: a model that ran
      out of patience is frozen while the others train on).
    val: optional ``(x_val, y_val)``.
    init_variables: optional stacked variables to warm-start from.
    mesh: optional device mesh (:func:`dal_jax.parallel.make_mesh`).
    vectorize: ``vmap`` over models (True) or run them one by one (False); None: vectorize on
      accelerators and meshes of several devices, not on a single CPU.

  Returns:
    :class:`StackedFit` with each model's best-validation variables.
  """
  m = keys.shape[0]
  if config.semi_supervised:
    raise ValueError("training with unlabeled inputs (train.unlabeled_weight or waal_alpha > 0) "
                     "runs with one model; use ensemble_size=1, one device and sequential seeds")
  n = x.shape[0]
  labeled = jnp.broadcast_to(jnp.asarray(labeled, bool), (m, n))
  y = jnp.broadcast_to(jnp.asarray(y, jnp.int32), (m, n))
  counts = np.asarray(jnp.sum(labeled, axis=1))
  if (counts == 0).any():
    raise ValueError(f"cannot train: models {np.nonzero(counts == 0)[0].tolist()} have no "
                     "labeled in-distribution examples")
  if not _vectorize(vectorize, mesh):
    fits = [training.fit(model, x, y[i], labeled[i], key=keys[i], config=config, val=val,
                         init_variables=None if init_variables is None else
                         _index(init_variables, i)) for i in range(m)]
    return StackedFit(variables=_stack([f.variables for f in fits]),
                      steps=np.array([f.steps for f in fits]),
                      best_val_accuracy=np.array([f.best_val_accuracy for f in fits]),
                      train_loss=np.array([f.train_loss for f in fits]))
  split = jax.vmap(jax.random.split)(keys)
  init_keys, data_keys = split[:, 0], split[:, 1]
  variables = init_variables if init_variables is not None else init_stacked(model, init_keys, x)
  tx = training.make_optimizer(config)
  step_fn = training.train_step_for(model, tx, config)
  states = jax.vmap(lambda v: training.init_train_state(v, tx))(variables)
  p = labeled.astype(jnp.float32) / counts[:, None].astype(np.float32)

  layout = parallel.stacked_layout(mesh, m, config.batch_size)
  if layout == "members":
    states, data_keys, y, p = parallel.shard_leading((states, data_keys, y, p), mesh)
    x = parallel.replicate(x, mesh)
  elif layout == "batch":
    states, data_keys, y, p, x = parallel.replicate((states, data_keys, y, p, x), mesh)

  best = states.variables
  best_acc = jnp.full((m,), -1.0)
  bad = np.zeros(m, int)
  active = np.ones(m, bool)
  steps = np.zeros(m, int)
  loss = jnp.full((m,), jnp.nan)
  chunk = max(1, min(config.eval_every, config.max_steps))
  done_steps = 0
  while done_steps < config.max_steps and active.any():
    new_states, losses = states, []
    for _ in range(chunk):
      new_states, metrics = _stacked_step(new_states, data_keys, x, y, p, train_step=step_fn,
                                          batch_size=config.batch_size, mesh=mesh,
                                          layout=layout)
      losses.append(metrics["loss"])
    done_steps += chunk
    act = jnp.asarray(active)
    states = _select(act, new_states, states)
    chunk_loss = jnp.mean(jnp.stack(losses), axis=0)
    if not bool(jnp.all(jnp.isfinite(jnp.where(act, chunk_loss, 0.0)))):
      raise FloatingPointError(f"training diverged at step {done_steps}; lower the learning rate")
    loss = jnp.where(act, chunk_loss, loss)
    steps = np.where(active, done_steps, steps)
    if val is None:
      best = states.variables
      continue
    acc = _stacked_accuracy(states.variables, jnp.asarray(val[0]), jnp.asarray(val[1]),
                            apply=model.apply)
    improved = act & (acc > best_acc)
    best = _select(improved, states.variables, best)
    best_acc = jnp.where(improved, acc, best_acc)
    imp = np.asarray(improved)
    bad = np.where(imp, 0, np.where(active, bad + 1, bad))
    active = active & (bad < config.patience)
  return StackedFit(variables=best, steps=steps, best_val_accuracy=np.asarray(best_acc),
                    train_loss=np.asarray(loss))


@functools.partial(jax.jit, static_argnames=("apply", "mc_samples", "with_pre_logits",
                                             "per_model_x", "per_model_keys"))
def _stacked_chunk(variables, x, keys, *, apply, mc_samples, with_pre_logits, per_model_x,
                   per_model_keys):
  def one(v, x, keys):
    pre = None
    if mc_samples == 0 or with_pre_logits:
      logits, aux = apply(v, x, train=False)
      pre = aux["pre_logits"] if with_pre_logits else None
    if mc_samples == 0:
      return jax.nn.log_softmax(logits)[None], pre
    lp = jax.vmap(lambda k: jax.nn.log_softmax(apply(v, x, train=False, mc=True, key=k)[0]))(keys)
    return lp, pre

  return jax.vmap(one, in_axes=(0, 0 if per_model_x else None, 0 if per_model_keys else None))(
      variables, x, keys)


def predict_stacked(model: Model, variables, x, *, key: jax.Array | None = None,
                    mc_samples: int = 0, chunk_size: int = 1024, with_pre_logits: bool = False,
                    mesh: jax.sharding.Mesh | None = None, per_model_x: bool = False,
                    vectorize: bool | None = None):
  """Per-model predictions of a stack, chunked over the pool (the pool axis sharded over devices).

  ``x`` is ``[N, ...]`` shared by every model, or with ``per_model_x`` ``[M, N, ...]`` (model m
  predicts ``x[m]``: parallel seeds scoring their own candidate sets). ``key`` is one key (every
  model uses the same S dropout keys) or ``[M]`` keys (model m uses ``split(key[m], S)``).

  Returns:
    ``(log_probs [M, max(S, 1), N, C], pre_logits [M, N, D] or None)``. For an ensemble, reshape
    to ``[M·S, N, C]`` (:func:`ensemble_log_probs`): DEBAL when ``mc_samples > 0``.
  """
  if mc_samples > 0 and key is None:
    raise ValueError("MC-dropout prediction (mc_samples > 0) needs a `key`")
  per_model_keys = key is not None and key.ndim == 1
  if not _vectorize(vectorize, mesh):
    m = jax.tree.leaves(variables)[0].shape[0]
    outs = [predict_lib.predict(model, _index(variables, i), x[i] if per_model_x else x,
                                key=(key[i] if per_model_keys else key) if mc_samples else None,
                                mc_samples=mc_samples, chunk_size=chunk_size,
                                with_pre_logits=with_pre_logits) for i in range(m)]
    return (jnp.stack([o.log_probs for o in outs]),
            jnp.stack([o.pre_logits for o in outs]) if with_pre_logits else None)
  axis = 1 if per_model_x else 0
  n = x.shape[axis]
  chunk = min(chunk_size, n)
  if mesh is not None and mesh.size > 1:
    chunk = parallel.pad_to_multiple(chunk, mesh.size)
  if not mc_samples:
    keys = jnp.zeros((0,), jnp.uint32)
    per_model_keys = False
  elif per_model_keys:
    keys = jax.vmap(lambda k: jax.random.split(k, mc_samples))(key)
  else:
    keys = jax.random.split(key, mc_samples)
  variables = parallel.replicate(variables, mesh)
  out_lp, out_pre = [], []
  for start in range(0, n, chunk):
    xc = jnp.asarray(x[:, start:start + chunk] if per_model_x else x[start:start + chunk])
    valid = xc.shape[axis]
    if valid < chunk:
      pad = [(0, 0)] * xc.ndim
      pad[axis] = (0, chunk - valid)
      xc = jnp.pad(xc, pad)
    if mesh is not None and mesh.size > 1:
      spec = (None, parallel.AXIS) if per_model_x else (parallel.AXIS,)
      xc = jax.device_put(xc, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(*spec)))
    lp, pre = _stacked_chunk(variables, xc, keys, apply=model.apply, mc_samples=mc_samples,
                             with_pre_logits=with_pre_logits, per_model_x=per_model_x,
                             per_model_keys=per_model_keys)
    out_lp.append(lp[:, :, :valid])
    if with_pre_logits:
      out_pre.append(pre[:, :valid])
  return (jnp.concatenate(out_lp, axis=2),
          jnp.concatenate(out_pre, axis=1) if with_pre_logits else None)


def ensemble_log_probs(stacked_log_probs: jax.Array) -> jax.Array:
  """``[M, S, N, C] -> [M·S, N, C]``: every member's every MC sample as one sample axis, so every
  acquisition (BALD, BatchBALD, QBC, ...) works on ensembles unchanged."""
  m, s, n, c = stacked_log_probs.shape
  return stacked_log_probs.reshape(m * s, n, c)


def mean_prediction(log_probs: jax.Array) -> jax.Array:
  """The ensemble's predictive distribution, averaged in probability space:
  ``log (1/S Σ_s p_s) = logsumexp_s(log p_s) - log S``; ``[S, N, C] -> [N, C]``."""
  return jax.nn.logsumexp(log_probs, axis=0) - math.log(log_probs.shape[0])
