"""Training: an immutable TrainState, a jitted train step, and ``fit`` with early stopping.

The labeled set is a boolean mask over the pool, so training never changes shape as it grows:
each step draws a fixed-size batch (with replacement, uniformly over labeled in-distribution
points) inside one jitted ``lax.scan`` of ``eval_every`` steps. A growing labeled set therefore
reuses one compiled program for every round.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from dal_jax import predict as predict_lib
from dal_jax import tasks as tasks_lib
from dal_jax.models import Model


class TrainConfig(NamedTuple):
  """Hyper-parameters of one ``fit`` (what every method shares; a method's own options live in
  its loss terms). The defaults are the project's recipe, the same values as the ``train``
  fields of :func:`dal_jax.config.default_config` (which reads them from here).

  Attributes:
    batch_size: labeled examples per step (drawn with replacement from the labeled set).
    learning_rate: Adam(W) learning rate.
    weight_decay: the weight-decay coefficient λ (see ``decay`` and ``weight_decay_scale``).
    max_steps: upper bound on optimisation steps.
    eval_every: steps between validation evaluations.
    patience: evaluations without validation improvement before stopping early.
    min_steps: steps before early stopping may stop (the best-validation weights are still
      restored at the end).
    min_epochs: passes over the labeled set before early stopping may stop: training runs at least
      ``max(min_steps, ceil(min_epochs · n_labeled / batch_size))`` steps (capped at
      ``max_steps``), so the minimum grows with the labeled set.
    early_stopping: the validation criterion, one of the task's: for classification
      ``"accuracy"`` (higher is better) or ``"nll"`` (lower is better; ties in accuracy, common
      on small validation sets, do not stop training while the model is still getting better
      calibrated); for segmentation also ``"miou"``. ``"none"``: no validation and no early
      stopping; every fit runs exactly :func:`min_train_steps` steps (a fixed number of epochs,
      as Gal et al. 2017 train) and keeps its last weights.
    decay: ``"decoupled"``: AdamW's decoupled decay, ``w ← w - η λ' w`` each step (Loshchilov &
      Hutter 2019); ``"l2"``: an L2 penalty ``λ'/2 ||w||²`` added to the loss, so its gradient goes
      through Adam's normalisation (Keras' ``kernel_regularizer``, as in Gal et al. 2017).
    weight_decay_scale: ``"constant"``: λ' = λ; ``"inverse_n"``: λ' = λ / n_labeled, the prior
      of a Bayesian network weighed against n likelihood terms (Gal et al. 2017 use an L2
      penalty c / N with c = 3.5, i.e. ``decay="l2"``, λ = 7, on their Keras loss).
    decay_params: which parameters decay: ``"all"``, or ``"dense_kernels"`` (the kernels of the
      dense layers only, no biases or convolutions: Keras' ``W_regularizer`` on the ``Dense``
      layers, as in Gal et al. 2017's code).
  """

  batch_size: int = 32
  learning_rate: float = 1e-3
  weight_decay: float = 1e-4
  max_steps: int = 1000
  eval_every: int = 25
  patience: int = 3
  min_steps: int = 300
  min_epochs: float = 20.0
  early_stopping: str = "accuracy"
  decay: str = "decoupled"
  weight_decay_scale: str = "constant"
  decay_params: str = "all"


DECAYS = ("decoupled", "l2")
DECAY_SCALES = ("constant", "inverse_n")
DECAY_PARAMS = ("all", "dense_kernels")
NO_EARLY_STOPPING = "none"


def check_train_config(config: TrainConfig,
                       task: tasks_lib.Task = tasks_lib.CLASSIFICATION) -> TrainConfig:
  """Every field in its allowed range (one line naming the field), else ``ValueError``;
  ``early_stopping`` must be one of the task's criteria."""
  for field, lo in (("batch_size", 1), ("max_steps", 1), ("eval_every", 1), ("patience", 1),
                    ("min_steps", 0)):
    v = getattr(config, field)
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
      raise ValueError(f"TrainConfig.{field} must be an integer >= {lo}, got {v!r}")
  criteria = [name for name, _ in task.criteria] + [NO_EARLY_STOPPING]
  for field, allowed in (("early_stopping", criteria), ("decay", DECAYS),
                         ("weight_decay_scale", DECAY_SCALES), ("decay_params", DECAY_PARAMS)):
    if getattr(config, field) not in allowed:
      raise ValueError(f"TrainConfig.{field} must be one of {list(allowed)}, got "
                       f"{getattr(config, field)!r}")
  for field, lo_open in (("learning_rate", True), ("weight_decay", False), ("min_epochs", False)):
    v = getattr(config, field)
    if (isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or not np.isfinite(v)
        or v < 0 or (lo_open and v == 0)):
      raise ValueError(f"TrainConfig.{field} must be a finite number {'> 0' if lo_open else '>= 0'}"
                       f", got {v!r}")
  return config


class Batch(NamedTuple):
  """One training batch as the loss terms see it.

  Attributes:
    x: ``[B, ...]`` labeled inputs (possibly transformed by a term's ``prepare``, e.g. mixup).
    y: ``[B, ...]`` their labels (the task's label shape).
    xu: ``[Bu, ...]`` unlabeled pool inputs, or None when no term asks for them.
    extras: arrays a term's ``prepare`` leaves for its ``loss`` or ``wrap`` (FixMatch's
      pseudo-labels, mixup's weight and permutation).
  """

  x: jax.Array
  y: jax.Array
  xu: jax.Array | None = None
  extras: dict[str, jax.Array] = {}


class StepOutputs(NamedTuple):
  """What a loss term reads after the forward pass of a train step.

  Attributes:
    logits: ``[B + Bu, C]`` logits of the labeled then the unlabeled inputs.
    aux: the model's ``aux`` for the same inputs (``pre_logits``, ``features``, ...).
    per_example: ``[B]`` the task loss of each labeled example (after the terms' ``wrap``).
    batch: the :class:`Batch`.
    key: the term's own PRNG key for this step.
  """

  logits: jax.Array
  aux: dict[str, Any]
  per_example: jax.Array
  batch: Batch
  key: jax.Array

  @property
  def num_labeled(self) -> int:
    return self.batch.x.shape[0]


class LossTerm(NamedTuple):
  """A term added to the task loss of every train step (composed like ``optax.chain``).

  Attributes:
    name: prefix of the term's metrics.
    loss: ``loss(params, out: StepOutputs) -> (scalar, metrics dict)``; ``params`` are the term's
      own trainable parameters (``{}`` for none), optimised together with the model's.
    init: ``init(key, model, x_example [1, ...]) -> params`` (None: no parameters).
    prepare: ``prepare(batch, key, *, teacher) -> batch`` runs before the forward pass (mixup
      mixes inputs; FixMatch makes pseudo-labels with ``teacher(x) -> logits``, the model in
      inference mode, and strong views of ``batch.xu``).
    unlabeled_ratio: unlabeled pool inputs per labeled input the term needs in each batch.
    outputs: ``outputs(params, aux) -> {name: [B] array}``: per-example outputs the term adds to
      predictions (LL4AL's ``predicted_loss``), which acquisitions can ask for by name.
    wrap: ``wrap(task_loss, batch) -> task_loss``: a new per-example task loss
      ``(logits, labels) -> [B]`` built around the task's (mixup weighs the loss of the labels
      and of the mixed-in labels); terms wrap in order.
  """

  name: str
  loss: Callable[..., tuple[jax.Array, dict[str, jax.Array]]]
  init: Callable[..., Any] | None = None
  prepare: Callable[..., Batch] | None = None
  unlabeled_ratio: int = 0
  outputs: Callable[..., dict[str, jax.Array]] | None = None
  wrap: Callable[..., Callable[[jax.Array, jax.Array], jax.Array]] | None = None


def unlabeled_ratio(terms: tuple[LossTerm, ...]) -> int:
  """Unlabeled inputs per labeled input a step needs for these terms (0: supervised)."""
  return max((t.unlabeled_ratio for t in terms), default=0)


def initialize(model: Model, key: jax.Array, x_example, terms: tuple[LossTerm, ...] = ()):
  """``{"model": model variables, "terms": (params of each term, ...)}``.

  The model is initialised with ``key`` itself, term i with ``fold_in(key, i + 1)``.
  """
  return {"model": model.init(key, x_example),
          "terms": tuple({} if t.init is None else t.init(jax.random.fold_in(key, i + 1), model,
                                                          x_example)
                         for i, t in enumerate(terms))}


class TrainState(flax.struct.PyTreeNode):
  step: jax.Array  # [] int32
  variables: Any  # {"model": {"params": ..., "batch_stats": ...}, "terms": (...)}
  opt_state: Any


def _trainable(variables):
  return {"params": variables["model"]["params"], "terms": variables["terms"]}


def _dense_kernels(trainable):
  """True for the 2-D ``kernel`` leaves of the model's parameters (dense layers' weights)."""
  def is_dense_kernel(path, leaf):
    last = path[-1]
    name = getattr(last, "key", getattr(last, "name", None))
    top = getattr(path[0], "key", None)
    return top == "params" and name == "kernel" and jnp.ndim(leaf) == 2
  return jax.tree_util.tree_map_with_path(is_dense_kernel, trainable)


def _adam_with_decay(learning_rate, decoupled, l2, decay_params="all"):
  """Adam with an L2 gradient term ``l2 · w`` before the moments and decoupled decay
  ``decoupled · w`` after them (AdamW's order), on the parameters ``decay_params`` names."""
  mask = None if decay_params == "all" else _dense_kernels
  return optax.chain(optax.add_decayed_weights(l2, mask=mask), optax.scale_by_adam(),
                     optax.add_decayed_weights(decoupled, mask=mask),
                     optax.scale_by_learning_rate(learning_rate))


@functools.lru_cache(maxsize=64)
def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
  """The optimizer of a config (cached, so repeated fits reuse one compiled train program).

  A constant decoupled decay is plain AdamW. Otherwise the decay coefficients are injected
  hyper-parameters held in the optimizer state (set per fit by :func:`init_train_state` from the
  labeled-set size), so a decay that changes every round still reuses one compiled program.
  """
  if (config.decay == "decoupled" and config.weight_decay_scale == "constant"
      and config.decay_params == "all"):
    return optax.adamw(config.learning_rate, weight_decay=config.weight_decay)
  return optax.inject_hyperparams(_adam_with_decay, static_args=("decay_params",))(
      learning_rate=config.learning_rate, decoupled=0.0, l2=0.0,
      decay_params=config.decay_params)


def effective_weight_decay(config: TrainConfig, n_labeled) -> jax.Array:
  """λ' of a fit on ``n_labeled`` points (``weight_decay_scale``), a float32 scalar (traceable:
  stacked fits compute it per model under ``vmap``)."""
  lam = jnp.asarray(config.weight_decay, jnp.float32)
  if config.weight_decay_scale == "inverse_n":
    return lam / jnp.maximum(jnp.asarray(n_labeled, jnp.float32), 1.0)
  return lam


def min_train_steps(config: TrainConfig, n_labeled) -> int:
  """Steps before early stopping may stop: ``max(min_steps, ceil(min_epochs · n / batch))``,
  at most ``max_steps``."""
  epochs = int(np.ceil(config.min_epochs * int(n_labeled) / config.batch_size))
  return min(config.max_steps, max(config.min_steps, epochs))


def total_train_steps(config: TrainConfig, n_labeled) -> int:
  """The most steps a fit on ``n_labeled`` points runs: ``max_steps``, or without early stopping
  (``early_stopping="none"``) exactly :func:`min_train_steps`."""
  if config.early_stopping == NO_EARLY_STOPPING:
    return min_train_steps(config, n_labeled)
  return config.max_steps


def _has_hyperparams(opt_state) -> bool:
  return hasattr(opt_state, "hyperparams")


def init_train_state(variables, tx: optax.GradientTransformation, *,
                     config: TrainConfig | None = None, n_labeled: int | None = None
                     ) -> TrainState:
  """The optimizer covers the model's parameters and the terms' parameters together; with
  ``config`` and ``n_labeled``, an optimizer from :func:`make_optimizer` with injected decay gets
  this fit's coefficient."""
  opt_state = tx.init(_trainable(variables))
  if _has_hyperparams(opt_state):
    if config is None or n_labeled is None:
      raise ValueError("this optimizer's weight decay depends on the labeled-set size: pass "
                       "config and n_labeled to init_train_state")
    lam = effective_weight_decay(config, n_labeled)
    zero = jnp.zeros((), jnp.float32)
    hp = dict(opt_state.hyperparams)
    hp["decoupled"] = lam if config.decay == "decoupled" else zero
    hp["l2"] = lam if config.decay == "l2" else zero
    opt_state = opt_state._replace(hyperparams=hp)
  return TrainState(step=jnp.zeros((), jnp.int32), variables=variables, opt_state=opt_state)


def validation_score(outputs: jax.Array, labels: jax.Array, criterion: str,
                     task: tasks_lib.Task = tasks_lib.CLASSIFICATION) -> jax.Array:
  """Higher is better: the task's early-stopping ``criterion`` on the model's outputs (logits
  or log-probabilities; classification: "accuracy", or "nll" for minus the mean NLL)."""
  return task.criterion(criterion)(outputs, labels)


def margin_ranking_loss(predicted: jax.Array, target: jax.Array, *, margin: float = 1.0
                        ) -> jax.Array:
  """LL4AL's loss-prediction loss (Yoo & Kweon 2019, Eq. 2).

  The batch is split into halves; example i of the first half is paired with example i of the
  second, and each pair costs ``max(0, -sign(l_i - l_j) (l̂_i - l̂_j) + ξ)``: the predicted
  losses must order the pair like the true losses, by a margin ξ. Only the order is learned, so
  the predictor is not dragged around by the scale of the loss, which shrinks during training.

  Args:
    predicted: ``[B]`` predicted losses l̂ (B even).
    target: ``[B]`` true losses l (treated as constants).
    margin: ξ.

  Returns:
    The mean over the B/2 pairs.
  """
  if predicted.shape != target.shape or predicted.ndim != 1 or predicted.shape[0] % 2:
    raise ValueError(f"margin_ranking_loss needs predicted and target of one even length [B]; "
                     f"got {predicted.shape} and {target.shape}")
  half = predicted.shape[0] // 2
  target = jax.lax.stop_gradient(target)
  sign = jnp.where(target[:half] > target[half:], 1.0, -1.0)
  return jnp.mean(jnp.maximum(0.0, -sign * (predicted[:half] - predicted[half:]) + margin))


@functools.lru_cache(maxsize=64)
def make_train_step(model: Model, tx: optax.GradientTransformation,
                    terms: tuple[LossTerm, ...] = (),
                    task: tasks_lib.Task = tasks_lib.CLASSIFICATION):
  """Returns ``train_step(state, batch, key) -> (state, metrics)`` for ``batch = (x, y)`` or
  ``(x, y, x_unlabeled)``.

  The loss is the mean task loss of the labeled examples (the task's ``loss``, wrapped by the
  terms that ``wrap`` it) plus the sum of the terms' losses.
  Each term's ``prepare`` runs first (in order); the labeled and unlabeled inputs then share one
  forward pass (one batch-norm update). Dropout uses ``key``; term i gets ``fold_in(key, i + 1)``.
  """

  def train_step(state: TrainState, batch, key):
    if len(state.variables["terms"]) != len(terms):
      raise ValueError(f"the variables hold parameters of {len(state.variables['terms'])} loss "
                       f"terms but the step has {len(terms)}; make them with "
                       "training.initialize(model, key, x, terms)")
    if unlabeled_ratio(terms) and len(batch) != 3:
      raise ValueError(f"loss terms {[t.name for t in terms if t.unlabeled_ratio]} need "
                       "unlabeled inputs: pass batch = (x, y, x_unlabeled)")
    x, y = batch[:2]
    b = Batch(x=x, y=y, xu=batch[2] if len(batch) == 3 else None)
    term_keys = [jax.random.fold_in(key, i + 1) for i in range(len(terms))]

    def teacher(xs):
      return jax.lax.stop_gradient(model.apply(state.variables["model"], xs, train=False)[0])

    for t, k in zip(terms, term_keys):
      if t.prepare is not None:
        b = t.prepare(b, jax.random.fold_in(k, 0), teacher=teacher)
    n = b.x.shape[0]
    x_in = b.x if b.xu is None else jnp.concatenate([b.x, b.xu])
    task_loss = task.loss
    for t in terms:
      if t.wrap is not None:
        task_loss = t.wrap(task_loss, b)

    def loss_fn(trainable):
      model_vars = {**state.variables["model"], "params": trainable["params"]}
      logits, aux = model.apply(model_vars, x_in, train=True, key=key)
      per_example = task_loss(logits[:n], b.y)
      loss = jnp.mean(per_example)
      metrics = {}
      out = StepOutputs(logits=logits, aux=aux, per_example=per_example, batch=b, key=key)
      for t, p, k in zip(terms, trainable["terms"], term_keys):
        value, m = t.loss(p, out._replace(key=k))
        loss = loss + value
        metrics.update({f"{t.name}/{name}": v for name, v in m.items()})
      return loss, (aux.get("updates", {}), logits[:n], metrics)

    trainable = _trainable(state.variables)
    (loss, (updates_coll, logits, metrics)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(trainable)
    updates, opt_state = tx.update(grads, state.opt_state, trainable)
    trainable = optax.apply_updates(trainable, updates)
    variables = {"model": {**state.variables["model"], **updates_coll,
                           "params": trainable["params"]},
                 "terms": trainable["terms"]}
    acc = task.criterion(task.validation_criterion)(logits, y)
    return state.replace(step=state.step + 1, variables=variables, opt_state=opt_state), {
        "loss": loss, "accuracy": acc, **metrics}

  return train_step


def sample_batch_step(state: TrainState, key: jax.Array, x: jax.Array, y: jax.Array,
                      p: jax.Array, *, train_step, batch_size: int, constrain=None,
                      p_unlabeled: jax.Array | None = None, unlabeled_batch_size: int = 0):
  """One step on a batch drawn (with replacement) from the distribution ``p`` over the pool.

  The step key is ``fold_in(key, state.step)``; ``constrain`` optionally places the batch (used to
  shard it over devices). With ``p_unlabeled``, ``unlabeled_batch_size`` inputs drawn from it are
  added to the batch (semi-supervised steps).
  """
  batch_key, dropout_key = jax.random.split(jax.random.fold_in(key, state.step))
  idx = jax.random.choice(batch_key, x.shape[0], (batch_size,), p=p)
  xb, yb = x[idx], y[idx]
  if constrain is not None:
    xb, yb = constrain(xb), constrain(yb)
  if p_unlabeled is None:
    return train_step(state, (xb, yb), dropout_key)
  u_idx = jax.random.choice(jax.random.fold_in(batch_key, 1), x.shape[0],
                            (unlabeled_batch_size,), p=p_unlabeled)
  return train_step(state, (xb, yb, x[u_idx]), dropout_key)


@functools.partial(jax.jit, static_argnames=("train_step", "batch_size", "unlabeled_batch_size"))
def sampled_train_step(state: TrainState, key: jax.Array, x: jax.Array, y: jax.Array,
                       p: jax.Array, *, train_step, batch_size: int,
                       p_unlabeled: jax.Array | None = None, unlabeled_batch_size: int = 0):
  """:func:`sample_batch_step`, jitted. ``x`` is passed as an argument (not baked into the
  program), so one compiled step serves every round."""
  return sample_batch_step(state, key, x, y, p, train_step=train_step, batch_size=batch_size,
                           p_unlabeled=p_unlabeled, unlabeled_batch_size=unlabeled_batch_size)


def train_steps(state: TrainState, key: jax.Array, x: jax.Array, y: jax.Array,
                sample_weights: jax.Array, *, train_step, num_steps: int, batch_size: int,
                unlabeled_weights: jax.Array | None = None, unlabeled_batch_size: int = 0):
  """Runs ``num_steps`` sampled steps; batches are drawn from ``x[sample_weights > 0]``.

  The steps are dispatched from Python rather than fused into one ``lax.scan``: on XLA:CPU a
  convolution inside a compiled loop ran ~11x slower than the same step dispatched on its own
  (Gal CNN, batch 32: 290 ms vs 26 ms per step, measured on the 2-core CI machine), while
  dispatch costs well under a millisecond.

  Args:
    state: the TrainState.
    key: PRNG key for these steps.
    x: ``[N, ...]`` pool inputs.
    y: ``[N]`` labels (only read where ``sample_weights > 0``).
    sample_weights: ``[N]`` non-negative float weights; normalised to a sampling distribution.
    unlabeled_weights: optional ``[N]`` weights of the unlabeled inputs of semi-supervised steps.
    unlabeled_batch_size: unlabeled inputs per step.

  Returns:
    ``(state, metrics)`` with metrics averaged over the steps.
  """
  p = sample_weights / jnp.sum(sample_weights)
  pu = None if unlabeled_weights is None else unlabeled_weights / jnp.sum(unlabeled_weights)
  history = []
  for _ in range(num_steps):
    state, m = sampled_train_step(state, key, x, y, p, train_step=train_step,
                                  batch_size=batch_size, p_unlabeled=pu,
                                  unlabeled_batch_size=unlabeled_batch_size if pu is not None
                                  else 0)
    history.append(m)
  return state, jax.tree.map(lambda *v: jnp.mean(jnp.stack(v)), *history)


class FitResult(NamedTuple):
  variables: Any  # {"model": ..., "terms": (...)}
  steps: int
  best_val_accuracy: float  # validation accuracy of the restored (best-criterion) weights
  train_loss: float


def fit(model: Model, x, y, labeled, *, key: jax.Array, config: TrainConfig,
        val: tuple[Any, Any] | None = None, init_variables=None, tx=None,
        terms: tuple[LossTerm, ...] = (), unlabeled=None,
        task: tasks_lib.Task = tasks_lib.CLASSIFICATION) -> FitResult:
  """Trains one model on the labeled part of a pool, with early stopping on a validation set.

  This is the single-model program; :class:`dal_jax.learner.Learner` runs it per model (or a
  ``vmap`` of the same step) for stacks of models.

  Args:
    model: the model.
    x: ``[N, ...]`` pool inputs (device array preferred: it is reused every round).
    y: ``[N]`` int labels; entries outside ``labeled`` are ignored (may be negative).
    labeled: ``[N]`` bool mask of trainable points (labeled and in-distribution).
    key: PRNG key; split into the init key and the data-order/dropout key.
    config: :class:`TrainConfig`.
    val: optional ``(x_val, y_val)`` for early stopping; without it training runs ``max_steps``
      (ignored with ``early_stopping="none"``, which runs :func:`total_train_steps`).
    init_variables: warm start from these ``{"model", "terms"}`` variables; ``None``
      initialises from scratch (:func:`initialize`).
    tx: optional optax optimizer (default :func:`make_optimizer`).
    terms: :class:`LossTerm` s added to the cross-entropy.
    unlabeled: ``[N]`` bool mask of unlabeled pool points, required when a term asks for
      unlabeled inputs (``LossTerm.unlabeled_ratio > 0``).
    task: the :class:`dal_jax.tasks.Task` (its loss, and its criteria for early stopping).

  Returns:
    :class:`FitResult` holding the variables with the best validation criterion
    (``config.early_stopping``); early stopping waits for :func:`min_train_steps`.

  Raises:
    ValueError: if nothing is labeled, or unlabeled inputs are needed and none are given.
  """
  check_train_config(config, task)
  labeled = jnp.asarray(labeled, bool)
  y = jnp.asarray(y, jnp.int32)
  n_labeled = int(jnp.sum(labeled))
  if n_labeled == 0:
    raise ValueError("cannot train: no labeled in-distribution examples")
  init_key, data_key = jax.random.split(key)
  variables = (init_variables if init_variables is not None
               else initialize(model, init_key, x[:1], terms))
  tx = tx or make_optimizer(config)
  state = init_train_state(variables, tx, config=config, n_labeled=n_labeled)
  step_fn = make_train_step(model, tx, tuple(terms), task)
  weights = labeled.astype(jnp.float32)
  u_weights, u_batch = None, 0
  ratio = unlabeled_ratio(terms)
  if ratio:
    if unlabeled is None or not bool(jnp.any(unlabeled)):
      raise ValueError(f"the loss terms {[t.name for t in terms if t.unlabeled_ratio]} train "
                       "on unlabeled inputs and need a non-empty `unlabeled` mask")
    u_weights = jnp.asarray(unlabeled, jnp.float32)
    u_batch = config.batch_size * ratio
  best, best_acc, best_score, bad, loss = state.variables, -1.0, -np.inf, 0, float("nan")
  min_steps = min_train_steps(config, n_labeled)
  total = total_train_steps(config, n_labeled)
  if config.early_stopping == NO_EARLY_STOPPING:
    val = None
  chunk = max(1, min(config.eval_every, total))
  while int(state.step) < total:
    state, m = train_steps(state, data_key, x, y, weights, train_step=step_fn,
                           num_steps=min(chunk, total - int(state.step)),
                           batch_size=config.batch_size,
                           unlabeled_weights=u_weights, unlabeled_batch_size=u_batch)
    loss = float(m["loss"])
    if not np.isfinite(loss):
      raise FloatingPointError(f"training diverged (loss={loss}) at step {int(state.step)}; "
                               "lower the learning rate")
    if val is None:
      best = state.variables
      continue
    out = predict_lib.raw_outputs(model, state.variables["model"], val[0], chunk_size=1024)
    acc = float(task.criterion(task.validation_criterion)(out, jnp.asarray(val[1])))
    score = float(validation_score(out, jnp.asarray(val[1]), config.early_stopping, task))
    if score > best_score:
      best, best_acc, best_score, bad = state.variables, acc, score, 0
    else:
      bad += 1
      if bad >= config.patience and int(state.step) >= min_steps:
        break
  return FitResult(variables=best, steps=int(state.step), best_val_accuracy=best_acc,
                   train_loss=loss)

