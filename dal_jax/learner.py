"""One learner for M >= 1 stacked models: ensemble members, seeds run in parallel, or both.

A stack of M models is one pytree whose leaves have a leading axis of size M; a single model is a
stack of one. :class:`Learner` ``init`` / ``fit`` / ``predict`` work on stacks only, so the loop
has one code path whatever M is:

* ``fit`` trains model m on its own labeled mask (``labeled [M, N]``: an ensemble repeats one
  mask, parallel seeds each have their own) from its own key; model m equals
  :func:`dal_jax.training.fit` run alone with ``keys[m]``, loss terms included.
* ``predict`` gives every model's log-probabilities (MC-dropout samples when asked), pre-logits
  and named outputs, chunked over the pool (the pool axis sharded over devices).

How the stack runs is the learner's own business: on accelerators and multi-device meshes a
``jax.vmap``-ed train step and prediction program (the model axis sharded when M is a multiple of
the device count, the batch axis otherwise; :mod:`dal_jax.parallel`); on a single CPU device the
models one after another through the single-model programs, because XLA:CPU runs a ``vmap``-ed
convolution (a grouped convolution) several times slower than the separate ones (Gal CNN: 2
stacked members trained in 2.3x the time of two separate trainings, measured on the 2-core CI
machine). Results are the same either way.

References: Lakshminarayanan et al. 2017 (deep ensembles); Beluch et al. 2018 (ensembles for
active learning); Pop & Fulop 2018 (DEBAL: ensembles of MC-dropout networks).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Iterator, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dal_jax import parallel
from dal_jax import predict as predict_lib
from dal_jax import streaming
from dal_jax import tasks as tasks_lib
from dal_jax import training
from dal_jax.models import Model


class StackedFit(NamedTuple):
  variables: Any  # {"model": ..., "terms": ...}, leaves [M, ...]
  steps: np.ndarray  # [M] steps each model trained for
  best_val_accuracy: np.ndarray  # [M]
  train_loss: np.ndarray  # [M]


class Predictions(NamedTuple):
  """Per-model predictions of a stack.

  Attributes:
    log_probs: ``[M, S, N, C]`` (S = 1 for a deterministic pass).
    pre_logits: ``[M, N, D]`` or None.
    outputs: ``{name: [M, N]}`` named outputs (model ``aux`` entries or loss-term outputs).
  """

  log_probs: jax.Array
  pre_logits: jax.Array | None
  outputs: dict[str, jax.Array]


def index(tree, i):
  """Model ``i`` of a stacked pytree."""
  return jax.tree.map(lambda v: v[i], tree)


def stack(trees):
  """Stacks pytrees of one structure on a new leading axis."""
  return jax.tree.map(lambda *v: jnp.stack(v), *trees)


def member_keys(key: jax.Array, members: int) -> jax.Array:
  """``[E]`` keys of the members of one ensemble trained from ``key``: a single model uses the
  key itself, ensemble members split it."""
  return key[None] if members == 1 else jax.random.split(key, members)


def ensemble_log_probs(stacked_log_probs: jax.Array) -> jax.Array:
  """``[E, S, N, ..., C] -> [E·S, N, ..., C]``: every member's every MC sample as one sample
  axis, so every acquisition (BALD, BatchBALD, QBC, ...) works on ensembles unchanged."""
  m, s, *rest = stacked_log_probs.shape
  return stacked_log_probs.reshape(m * s, *rest)


def mean_prediction(log_probs: jax.Array) -> jax.Array:
  """The ensemble's predictive distribution, averaged in probability space:
  ``log (1/S Σ_s p_s) = logsumexp_s(log p_s) - log S``; ``[S, N, C] -> [N, C]``."""
  return jax.nn.logsumexp(log_probs, axis=0) - math.log(log_probs.shape[0])


@functools.partial(jax.jit, static_argnames=("train_step", "batch_size", "mesh", "layout",
                                             "unlabeled_batch_size"))
def _stacked_step(states, keys, x, y, p, pu, *, train_step, batch_size, mesh, layout,
                  unlabeled_batch_size):
  constrain = None
  if layout == "batch":
    constrain = functools.partial(parallel.batch_constraint, mesh=mesh, axis=0)

  def one(state, key, y_m, p_m, pu_m):
    return training.sample_batch_step(state, key, x, y_m, p_m, train_step=train_step,
                                      batch_size=batch_size, constrain=constrain,
                                      p_unlabeled=pu_m,
                                      unlabeled_batch_size=unlabeled_batch_size)

  return jax.vmap(one)(states, keys, y, p, pu)


@functools.partial(jax.jit, static_argnames=("apply", "criterion", "task"))
def _stacked_validation(variables, x, y, *, apply, criterion, task):
  """``([M] headline, [M] score)`` of every model on the validation set: the task's headline
  criterion and its early-stopping ``criterion`` (:func:`training.validation_score`)."""
  def one(v):
    outputs = apply(v["model"], x, train=False)[0]
    acc = task.criterion(task.validation_criterion)(outputs, y)
    if criterion == task.validation_criterion:
      return acc, acc
    return acc, training.validation_score(outputs, y, criterion, task)
  return jax.vmap(one)(variables)


def _select(mask, new, old):
  """Per-model choice between two stacked pytrees (``mask [M]``)."""
  def pick(a, b):
    return jnp.where(mask.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)
  return jax.tree.map(pick, new, old)


@functools.partial(jax.jit, static_argnames=("apply", "mc_samples", "with_pre_logits",
                                             "outputs", "terms", "per_model_x", "log_probs"))
def _stacked_chunk(variables, x, keys, *, apply, mc_samples, with_pre_logits, outputs, terms,
                   per_model_x, log_probs):
  def one(v, x, keys):
    return predict_lib._predict_chunk(v["model"], v["terms"], x, keys, apply=apply,
                                      mc_samples=mc_samples, with_pre_logits=with_pre_logits,
                                      outputs=outputs, terms=terms, log_probs=log_probs)

  return jax.vmap(one, in_axes=(0, 0 if per_model_x else None, 0))(variables, x, keys)


class Learner(NamedTuple):
  """Trains and predicts with a stack of M >= 1 models.

  Attributes:
    model: the model.
    config: :class:`dal_jax.training.TrainConfig`.
    terms: loss terms added to the cross-entropy (a method's training side).
    mesh: optional device mesh (:func:`dal_jax.parallel.make_mesh`).
    chunk_size: pool points per compiled prediction call.
    task: the :class:`dal_jax.tasks.Task` (its loss, early-stopping criteria and metrics).
    vectorize: ``vmap`` over models (True) or run them one by one (False); None: vectorize on
      accelerators and meshes of several devices, not on a single CPU device.
  """

  model: Model
  config: training.TrainConfig = training.TrainConfig()
  terms: tuple[training.LossTerm, ...] = ()
  mesh: Any = None
  chunk_size: int = 1024
  vectorize: bool | None = None
  task: tasks_lib.Task = tasks_lib.CLASSIFICATION

  @property
  def vectorized(self) -> bool:
    """Whether stacks run as one ``vmap``-ed program (else model by model)."""
    if self.vectorize is not None:
      return self.vectorize
    return (self.mesh is not None and self.mesh.size > 1) or jax.default_backend() != "cpu"

  @property
  def unlabeled_ratio(self) -> int:
    return training.unlabeled_ratio(self.terms)

  def init(self, keys: jax.Array, x_example) -> Any:
    """Stacked ``{"model", "terms"}`` variables of ``keys.shape[0]`` models."""
    x1 = jnp.asarray(streaming.materialize(x_example[:1]))
    return jax.vmap(lambda k: training.initialize(self.model, k, x1, self.terms))(keys)

  def fit(self, x, y, labeled, *, keys: jax.Array, val: tuple[Any, Any] | None = None,
          init=None, unlabeled=None) -> StackedFit:
    """Trains M models; model m is exactly ``training.fit(..., key=keys[m])``.

    Args:
      x: ``[N, ...]`` training inputs, shared by all models.
      y: ``[N, ...]`` or ``[M, N, ...]`` labels of the task's label shape (entries outside
        ``labeled`` are ignored).
      labeled: ``[N]`` or ``[M, N]`` trainable masks.
      keys: ``[M]`` PRNG keys, one per model.
      val: optional ``(x_val, y_val)`` for early stopping (per model: a model that ran out of
        patience is frozen while the others train on).
      init: optional stacked variables to warm-start from.
      unlabeled: ``[N]`` or ``[M, N]`` masks of unlabeled inputs, for loss terms that train on
        them.

    Returns:
      :class:`StackedFit` with each model's best-validation variables.
    """
    training.check_train_config(self.config, self.task)
    m, n = keys.shape[0], x.shape[0]
    labeled = jnp.broadcast_to(jnp.asarray(labeled, bool), (m, n))
    label_shape = tuple(self.task.label_shape(tuple(x.shape[1:])))
    y = jnp.asarray(y, jnp.int32)
    stacked = y.ndim == len(label_shape) + 2
    try:
      self.task.check_labels(x.shape[1:], y.shape[1:] if stacked else y.shape)
      if y.shape[int(stacked)] != n:
        raise ValueError
    except ValueError:
      dims = "".join(f", {'B' if d is None else d}" for d in label_shape)
      raise ValueError(f"labels must be shaped [N{dims}] or [M, N{dims}] for the "
                       f"{self.task.name} task, got {y.shape}") from None
    y = jnp.broadcast_to(y, (m, *y.shape[-len(label_shape) - 1:]))
    if unlabeled is not None:
      unlabeled = jnp.broadcast_to(jnp.asarray(unlabeled, bool), (m, n))
    counts = np.asarray(jnp.sum(labeled, axis=1))
    if (counts == 0).any():
      raise ValueError(f"cannot train: models {np.nonzero(counts == 0)[0].tolist()} have no "
                       "labeled in-distribution examples")
    if not self.vectorized:
      fits = [training.fit(self.model, x, y[i], labeled[i], key=keys[i], config=self.config,
                           val=val, init_variables=None if init is None else index(init, i),
                           terms=self.terms, task=self.task,
                           unlabeled=None if unlabeled is None else unlabeled[i])
              for i in range(m)]
      return StackedFit(variables=stack([f.variables for f in fits]),
                        steps=np.array([f.steps for f in fits]),
                        best_val_accuracy=np.array([f.best_val_accuracy for f in fits]),
                        train_loss=np.array([f.train_loss for f in fits]))
    return self._fit_vectorized(x, y, labeled, counts, keys=keys, val=val, init=init,
                                unlabeled=unlabeled)

  def _fit_vectorized(self, x, y, labeled, counts, *, keys, val, init, unlabeled) -> StackedFit:
    config, mesh, m = self.config, self.mesh, keys.shape[0]
    split = jax.vmap(jax.random.split)(keys)
    init_keys, data_keys = split[:, 0], split[:, 1]
    variables = init if init is not None else self.init(init_keys, x)
    tx = training.make_optimizer(config)
    step_fn = training.make_train_step(self.model, tx, self.terms, self.task)
    # Each model's decay from its own labeled count (ignored by a constant-decay AdamW).
    states = jax.vmap(lambda v, n: training.init_train_state(v, tx, config=config, n_labeled=n))(
        variables, jnp.asarray(counts))
    p = labeled.astype(jnp.float32) / counts[:, None].astype(np.float32)
    ratio = self.unlabeled_ratio
    pu, u_batch = None, 0
    if ratio:
      if unlabeled is None or not bool(jnp.all(jnp.any(unlabeled, axis=1))):
        raise ValueError(f"the loss terms {[t.name for t in self.terms if t.unlabeled_ratio]} "
                         "train on unlabeled inputs and need a non-empty `unlabeled` mask")
      u = unlabeled.astype(jnp.float32)
      pu, u_batch = u / jnp.sum(u, axis=1, keepdims=True), config.batch_size * ratio
    layout = parallel.stacked_layout(mesh, m, config.batch_size)
    if layout == "members":
      states, data_keys, y, p, pu = parallel.shard_leading((states, data_keys, y, p, pu), mesh)
      x = parallel.replicate(x, mesh)
    elif layout == "batch":
      states, data_keys, y, p, pu, x = parallel.replicate((states, data_keys, y, p, pu, x), mesh)

    best = states.variables
    best_acc = jnp.full((m,), -1.0)
    best_score = jnp.full((m,), -jnp.inf)
    min_steps = np.array([training.min_train_steps(config, c) for c in counts])
    total = np.array([training.total_train_steps(config, c) for c in counts])
    if config.early_stopping == training.NO_EARLY_STOPPING:
      val = None
    bad = np.zeros(m, int)
    active = np.ones(m, bool)
    steps = np.zeros(m, int)
    loss = jnp.full((m,), jnp.nan)
    chunk = max(1, min(config.eval_every, int(total.max())))
    done_steps = 0
    while done_steps < int(total.max()) and active.any():
      new_states, losses = states, []
      # max_steps is an upper bound; without early stopping each model runs its own total
      this = min(chunk, int((total[active] - done_steps).min()))
      for _ in range(this):
        new_states, metrics = _stacked_step(new_states, data_keys, x, y, p, pu,
                                            train_step=step_fn, batch_size=config.batch_size,
                                            mesh=mesh, layout=layout,
                                            unlabeled_batch_size=u_batch)
        losses.append(metrics["loss"])
      done_steps += this
      act = jnp.asarray(active)
      states = _select(act, new_states, states)
      chunk_loss = jnp.mean(jnp.stack(losses), axis=0)
      if not bool(jnp.all(jnp.isfinite(jnp.where(act, chunk_loss, 0.0)))):
        raise FloatingPointError(f"training diverged at step {done_steps}; lower the learning "
                                 "rate")
      loss = jnp.where(act, chunk_loss, loss)
      steps = np.where(active, done_steps, steps)
      active = active & (done_steps < total)
      if val is None:
        best = states.variables
        continue
      acc, score = _stacked_validation(states.variables, jnp.asarray(val[0]),
                                       jnp.asarray(val[1]), apply=self.model.apply,
                                       criterion=config.early_stopping, task=self.task)
      improved = act & (score > best_score)
      best = _select(improved, states.variables, best)
      best_acc = jnp.where(improved, acc, best_acc)
      best_score = jnp.where(improved, score, best_score)
      imp = np.asarray(improved)
      bad = np.where(imp, 0, np.where(active, bad + 1, bad))
      active = active & ((bad < config.patience) | (done_steps < min_steps))
    return StackedFit(variables=best, steps=steps, best_val_accuracy=np.asarray(best_acc),
                      train_loss=np.asarray(loss))

  def predict(self, variables, x, *, keys: jax.Array | None = None, mc_samples: int = 0,
              with_pre_logits: bool = False, outputs: tuple[str, ...] = (),
              per_model_x: bool = False) -> Predictions:
    """Every model's predictions, chunked over the pool.

    Args:
      variables: stacked variables (M models).
      x: ``[N, ...]`` inputs shared by every model, or with ``per_model_x`` ``[M, N, ...]``
        (model m predicts ``x[m]``: parallel seeds scoring their own candidates); an array or a
        view of a pool on disk (:class:`dal_jax.streaming.Rows`), read chunk by chunk.
      keys: ``[M]`` dropout keys (model m uses ``split(keys[m], S)``); required when
        ``mc_samples > 0``.
      mc_samples: S MC-dropout samples (0: one deterministic pass).
      with_pre_logits: also return the deterministic pre-logits.
      outputs: named per-example outputs (model ``aux`` entries or loss-term outputs).
      per_model_x: see ``x``.

    Returns:
      :class:`Predictions`.
    """
    parts = list(self.predict_chunks(variables, x, keys=keys, mc_samples=mc_samples,
                                     with_pre_logits=with_pre_logits, outputs=outputs,
                                     per_model_x=per_model_x))
    return Predictions(
        jnp.concatenate([p.log_probs for _, p in parts], axis=2),
        jnp.concatenate([p.pre_logits for _, p in parts], axis=1) if with_pre_logits else None,
        {k: jnp.concatenate([p.outputs[k] for _, p in parts], axis=1) for k in outputs})

  def predict_chunks(self, variables, x, *, keys: jax.Array | None = None, mc_samples: int = 0,
                     with_pre_logits: bool = False, outputs: tuple[str, ...] = (),
                     per_model_x: bool = False) -> Iterator[tuple[int, Predictions]]:
    """:meth:`predict` one chunk at a time: yields ``(start, Predictions)`` of the pool points
    ``start, start + 1, ...`` (``log_probs`` ``[M, S, n, C]``), so a caller can reduce each
    chunk (to scores) and never hold ``[M, S, N, C]`` for the pool. The chunks' values are
    exactly those of :meth:`predict`."""
    m = jax.tree.leaves(variables)[0].shape[0]
    if mc_samples > 0 and (keys is None or keys.shape != (m,)):
      raise ValueError(f"MC-dropout prediction (mc_samples > 0) needs `keys` shaped [{m}]")
    if mc_samples < 0:
      raise ValueError(f"mc_samples must be >= 0, got {mc_samples}")
    axis = 1 if per_model_x else 0
    n = x.shape[axis]
    if n == 0:
      raise ValueError("cannot predict an empty pool")
    if self.chunk_size < 1:
      raise ValueError(f"chunk_size must be positive, got {self.chunk_size}")
    outputs = tuple(outputs)
    chunk = min(self.chunk_size, n)
    if self.vectorized:
      mesh = self.mesh
      if mesh is not None and mesh.size > 1:
        chunk = parallel.pad_to_multiple(chunk, mesh.size)
      sample_keys = (jax.vmap(lambda k: jax.random.split(k, mc_samples))(keys) if mc_samples
                     else jnp.zeros((m, 0), jnp.uint32))
      variables = parallel.replicate(variables, mesh)
    for start in range(0, n, chunk):
      if not self.vectorized:
        yield start, self._predict_one_by_one(variables, x, start, chunk, keys=keys,
                                              mc_samples=mc_samples,
                                              with_pre_logits=with_pre_logits,
                                              outputs=outputs, per_model_x=per_model_x)
        continue
      xc, valid = _chunk_input(x, start, chunk, axis, mesh)
      lp, pre, named = parallel.everywhere(_stacked_chunk(
          variables, xc, sample_keys, apply=self.model.apply, mc_samples=mc_samples,
          with_pre_logits=with_pre_logits, outputs=outputs, terms=self.terms,
          per_model_x=per_model_x, log_probs=self.task.log_probs), mesh)
      yield start, Predictions(lp[:, :, :valid], pre[:, :valid] if with_pre_logits else None,
                               {k: v[:, :valid] for k, v in named.items()})

  def _predict_one_by_one(self, variables, x, start, chunk, *, keys, mc_samples,
                          with_pre_logits, outputs, per_model_x) -> Predictions:
    """One chunk, model by model (``predict.predict`` of each model on that chunk)."""
    m = jax.tree.leaves(variables)[0].shape[0]
    if per_model_x:
      xc = jnp.asarray(streaming.materialize(x[:, start:start + chunk]))
    else:
      xc = jnp.asarray(streaming.materialize(x[start:start + chunk]))
    outs = [predict_lib.predict(self.model, index(variables["model"], i),
                                xc[i] if per_model_x else xc,
                                key=keys[i] if mc_samples else None, mc_samples=mc_samples,
                                chunk_size=chunk, pad_to=chunk,
                                with_pre_logits=with_pre_logits, outputs=outputs,
                                terms=self.terms, term_params=index(variables["terms"], i),
                                log_probs=self.task.log_probs)
            for i in range(m)]
    return Predictions(jnp.stack([o.log_probs for o in outs]),
                       jnp.stack([o.pre_logits for o in outs]) if with_pre_logits else None,
                       {k: jnp.stack([o.extras[k] for o in outs]) for k in outputs})


def _chunk_input(x, start: int, chunk: int, axis: int, mesh):
  """``(chunk of x padded with zeros to `chunk` along `axis`, valid rows)``, placed on the mesh
  split along `axis`. From a view of a pool on disk, each device's rows are read for that device
  alone, so with several processes each process reads only the rows of its own devices."""
  n = x.shape[axis]
  valid = min(chunk, n - start)
  sharded = mesh is not None and mesh.size > 1
  spec = (None, parallel.AXIS) if axis == 1 else (parallel.AXIS,)
  if sharded and streaming.is_rows(x):
    shape = list(x.shape)
    shape[axis] = chunk
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(*spec))
    return jax.make_array_from_callback(
        tuple(shape), sharding,
        lambda idx: streaming.rows_block(x, idx, axis=axis, start=start, chunk=chunk)), valid
  block = (slice(None),) * axis + (slice(start, start + chunk),)
  xc = jnp.asarray(streaming.materialize(x[block]))
  if valid < chunk:
    pad = [(0, 0)] * xc.ndim
    pad[axis] = (0, chunk - valid)
    xc = jnp.pad(xc, pad)
  if sharded:
    xc = parallel.put(xc, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(*spec)))
  return xc, valid
