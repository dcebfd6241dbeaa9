"""The active learning loop: immutable state, one round as a function, oracles, stopping rules.

One round (Ren et al. 2021, Fig. 1)::

  train f on L  ->  evaluate  ->  stop?  ->  score U  ->  select k  ->  oracle labels  ->  L ∪= B

All randomness of round r comes from ``fold_in(state.key, r)``, so a run resumed from the state
saved after round r makes exactly the choices an uninterrupted run makes.
"""

from __future__ import annotations

import time
from typing import Any, Callable, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from dal_jax import acquisition as acq_lib
from dal_jax import ensemble as ensemble_lib
from dal_jax import metrics as metrics_lib
from dal_jax import predict as predict_lib
from dal_jax import semi
from dal_jax import stopping
from dal_jax import training
from dal_jax.data import OOD_LABEL
from dal_jax.models import Model

UNKNOWN = -2  # label of a pool point nobody has asked the oracle about


class LoopState(flax.struct.PyTreeNode):
  """Everything the loop knows, as fixed-shape arrays (N = pool size).

  Attributes:
    labeled: ``[N]`` bool, points the oracle has labeled (budget spent on them).
    labels: ``[N]`` int32 labels known so far; ``UNKNOWN`` (-2) where unlabeled, ``OOD_LABEL``
      (-1) for labeled out-of-distribution points (not trained on).
    acquired_round: ``[N]`` int32 round whose selection added the point (``0`` = initial set,
      ``r + 1`` = selected in round r), ``-1`` where unlabeled. This is the selection history.
    round: ``[]`` int32, rounds completed.
    key: the run's PRNG key (round keys are ``fold_in(key, round)``).
    done: ``[]`` bool, a stopping rule fired.
    stop_set: ``[P]`` int32 pool positions of the stabilizing-predictions stop set (P may be 0).
    stop_predictions: ``[P]`` int32 last model's predicted labels on the stop set (-1: none yet).
    kappa_window: ``[W]`` float32 last W Cohen's kappas between successive models (NaN: none).
    method_state: the trainable state of an acquisition that learns to select (DAL's
      classifier, VAAL's VAE and discriminator, WAAL's critic): a pytree carried from round to
      round and checkpointed with the rest; ``{}`` for other acquisitions.
  """

  labeled: jax.Array
  labels: jax.Array
  acquired_round: jax.Array
  round: jax.Array
  key: jax.Array
  done: jax.Array
  stop_set: jax.Array
  stop_predictions: jax.Array
  kappa_window: jax.Array
  method_state: Any = flax.struct.field(default_factory=dict)
  extra_x: jax.Array | None = None
  extra_y: jax.Array | None = None

  @property
  def num_labeled(self) -> int:
    return int(jnp.sum(self.labeled))

  @property
  def trainable(self) -> jax.Array:
    """``[N]`` bool: labeled in-distribution points."""
    return self.labeled & (self.labels >= 0)

  def training_set(self, x_pool: jax.Array):
    """``(x, labels, trainable)`` of the pool plus the extra examples (when there are any)."""
    if self.extra_x is None:
      return x_pool, self.labels, self.trainable
    return (jnp.concatenate([x_pool, self.extra_x.astype(x_pool.dtype)]),
            jnp.concatenate([self.labels, self.extra_y]),
            jnp.concatenate([self.trainable, self.extra_y >= 0]))


class Oracle(NamedTuple):
  """``label(indices [k]) -> labels [k]`` (``OOD_LABEL`` for out-of-distribution points)."""

  label: Callable[[np.ndarray], np.ndarray]
  num_classes: int


def simulated_oracle(y: np.ndarray, num_classes: int) -> Oracle:
  """An oracle that answers from ground-truth labels (the usual pool-based simulation)."""
  y = np.asarray(y, np.int32)
  bad = (y >= num_classes) | ((y < 0) & (y != OOD_LABEL))
  if bad.any():
    raise ValueError(f"labels out of range [0, {num_classes}) (or OOD_LABEL={OOD_LABEL}) at pool "
                     f"positions {np.nonzero(bad)[0][:10].tolist()}")

  def label(indices):
    indices = np.asarray(indices)
    if indices.ndim != 1 or (indices < 0).any() or (indices >= y.shape[0]).any():
      raise ValueError(f"oracle asked for invalid pool indices {indices[:10]} (pool of "
                       f"{y.shape[0]})")
    return y[indices]

  return Oracle(label=label, num_classes=num_classes)


def initial_indices(key: jax.Array, y: np.ndarray, size: int, *, balanced: bool,
                    num_classes: int) -> np.ndarray:
  """The initial labeled set: ``size`` random pool points, or (``balanced``) ``size // C`` per
  class as in Gal et al. 2017 (uses ground truth, so it is for simulations only)."""
  n = y.shape[0]
  if size < 1 or size > n:
    raise ValueError(f"initial_size={size} must be in [1, {n}]")
  order = np.asarray(jax.random.permutation(key, n))
  if not balanced:
    return np.sort(order[:size])
  per_class = size // num_classes
  if per_class * num_classes != size:
    raise ValueError(f"a balanced initial set needs initial_size divisible by {num_classes} "
                     f"classes, got {size}")
  chosen = []
  for c in range(num_classes):
    members = order[y[order] == c]
    if members.shape[0] < per_class:
      raise ValueError(f"class {c} has only {members.shape[0]} pool points; cannot take "
                       f"{per_class} for the balanced initial set")
    chosen.append(members[:per_class])
  return np.sort(np.concatenate(chosen))


def init_method_state(acquisition: str, key: jax.Array, model: Model, x_example: jax.Array,
                      num_classes: int, options: dict[str, Any] | None = None) -> Any:
  """The initial method state of a learned acquisition (``{}`` for the others).

  Args:
    acquisition: registry name.
    key: PRNG key for the acquisition's own network.
    model: the task model (its ``pre_logits`` width sizes embedding-based networks).
    x_example: ``[1, ...]`` one pool input.
    num_classes: C.
    options: the acquisition's hyper-parameters (``RoundConfig.acquisition_options``).
  """
  acq = acq_lib.get_acquisition(acquisition)
  if not acq.stateful:
    return {}
  variables = jax.eval_shape(model.init, jax.random.key(0), x_example)
  pre = jax.eval_shape(lambda v: model.apply(v, x_example, train=False)[1]["pre_logits"],
                       variables)
  spec = acq_lib.Spec(input_shape=tuple(x_example.shape[1:]),
                      pre_logits_dim=int(pre.shape[-1]), num_classes=num_classes)
  return acq.init_state(key, spec, **(options or {}))


def init_loop_state(key: jax.Array, num_points: int, initial: np.ndarray,
                    oracle: Oracle, *, stop_set: np.ndarray | None = None,
                    kappa_window: int = 0, method_state: Any = None,
                    extra_capacity: int = 0, x_example: jax.Array | None = None) -> LoopState:
  """A fresh state whose labeled set is ``initial`` (labels from the oracle).

  ``stop_set`` (pool positions) and ``kappa_window`` enable the stabilizing-predictions rule;
  ``method_state`` is a learned acquisition's initial state (:func:`init_method_state`);
  ``extra_capacity > 0`` reserves that many slots (inputs shaped like ``x_example [1, ...]``) for
  adversarial training examples (``RoundConfig.adversarial_training``).
  """
  initial = np.asarray(initial)
  if len(np.unique(initial)) != len(initial):
    raise ValueError("initial indices contain duplicates")
  labeled = np.zeros(num_points, bool)
  labeled[initial] = True
  labels = np.full(num_points, UNKNOWN, np.int32)
  labels[initial] = oracle.label(initial)
  acquired = np.where(labeled, 0, -1).astype(np.int32)
  stop_set = np.zeros(0, np.int32) if stop_set is None else np.asarray(stop_set, np.int32)
  return LoopState(labeled=jnp.asarray(labeled), labels=jnp.asarray(labels),
                   acquired_round=jnp.asarray(acquired), round=jnp.zeros((), jnp.int32),
                   key=key, done=jnp.zeros((), bool), stop_set=jnp.asarray(stop_set),
                   stop_predictions=jnp.full(stop_set.shape, -1, jnp.int32),
                   kappa_window=jnp.full((kappa_window,), jnp.nan, jnp.float32),
                   method_state={} if method_state is None else method_state,
                   extra_x=None if not extra_capacity else
                   jnp.zeros((extra_capacity, *x_example.shape[1:]), jnp.float32),
                   extra_y=None if not extra_capacity else
                   jnp.full((extra_capacity,), -1, jnp.int32))


def add_labels(state: LoopState, indices: np.ndarray, labels: np.ndarray) -> LoopState:
  """Adds oracle answers for ``indices`` (which must be unlabeled) to the state."""
  indices = np.asarray(indices)
  already = np.asarray(state.labeled)[indices]
  if already.any() or len(np.unique(indices)) != len(indices):
    raise ValueError(f"selection must be distinct unlabeled points; got labeled/duplicate "
                     f"indices {indices[already].tolist() or indices.tolist()}")
  return state.replace(
      labeled=state.labeled.at[indices].set(True),
      labels=state.labels.at[indices].set(jnp.asarray(labels, jnp.int32)),
      acquired_round=state.acquired_round.at[indices].set(state.round + 1))


class RoundConfig(NamedTuple):
  """What a round needs besides the state.

  Attributes:
    acquisition: registry name.
    query_size: k, points labeled per round.
    mc_samples: MC-dropout samples for scoring (0 = deterministic).
    selector, beta: selector name and temperature (``dal_jax.acquisition.SELECTORS``).
    pool_subsample: score at most this many random unlabeled candidates per round (0 = all).
    chunk_size: pool inference chunk.
    budget: stop once this many points are labeled.
    target_accuracy: stop once test accuracy reaches this (``None``: never).
    warm_start: continue from the previous round's weights instead of re-initialising.
    train: the :class:`dal_jax.training.TrainConfig`.
    ensemble_size: M > 1 trains a deep ensemble (members in parallel, ``vmap``); scoring sees
      ``[M·S, N, C]`` log-probs (DEBAL when ``mc_samples > 0``), pre-logits of member 0.
    mesh: optional device mesh; with more than one device, models and pool chunks are sharded.
    stabilizing: optional :class:`dal_jax.stopping.StabilizingPredictions` (the state must hold
      a stop set).
    ceal: optional :class:`dal_jax.semi.CEAL`: after training, confident unlabeled points get
      pseudo-labels and the model is fine-tuned on labeled + pseudo-labeled points.
    acquisition_options: hyper-parameters of a learned acquisition as ``(name, value)`` pairs
      (e.g. ``(("steps", 100),)`` for DAL / VAAL / WAAL).
    adversarial_training: add a DeepFool adversarial copy ``x + r`` of every selected point,
      with the point's label, to the training set (DFAL, Ducoffe & Precioso 2018); the state
      needs ``extra_capacity`` slots.
  """

  acquisition: str
  query_size: int
  mc_samples: int = 20
  selector: str = "top_k"
  beta: float = 1.0
  pool_subsample: int = 0
  chunk_size: int = 1024
  budget: int = 1000
  target_accuracy: float | None = None
  warm_start: bool = False
  train: training.TrainConfig = training.TrainConfig()
  ensemble_size: int = 1
  mesh: Any = None
  stabilizing: stopping.StabilizingPredictions | None = None
  ceal: semi.CEAL | None = None
  acquisition_options: tuple[tuple[str, Any], ...] = ()
  adversarial_training: bool = False

  @property
  def stacked(self) -> bool:
    """Whether models go through the stacked (ensemble / multi-device) path."""
    return self.ensemble_size > 1 or (self.mesh is not None and self.mesh.size > 1)


class LoopData(NamedTuple):
  """Device arrays of the fixed splits (pool labels are only known through the oracle)."""

  x_pool: jax.Array
  x_val: jax.Array | None
  y_val: jax.Array | None
  x_test: jax.Array
  y_test: jax.Array


def _scored_points(key: jax.Array, labeled: jax.Array, m: int, bucket: int = 256) -> jax.Array:
  """Pool positions to score: ``m`` random unlabeled ones (fewer if fewer remain) followed by
  every labeled one, so methods that reason about the labeled set (core-set, redundancy) see it
  even when the pool is subsampled. The labeled part is padded (repeating a labeled position) to
  a multiple of ``bucket``, so the scored set keeps one shape for many rounds (no recompiles)."""
  unlabeled = ~labeled
  noise = jax.random.uniform(key, labeled.shape)
  m = min(m, int(jnp.sum(unlabeled)))
  sub = jax.lax.top_k(jnp.where(unlabeled, noise, -1.0), m)[1]
  n_labeled = int(jnp.sum(labeled))
  if n_labeled == 0:
    return sub
  size = -(-n_labeled // bucket) * bucket
  first = jnp.argmax(labeled)
  lab = jnp.nonzero(labeled, size=size, fill_value=first)[0].astype(sub.dtype)
  return jnp.concatenate([sub, lab])


def _fit(model, data: LoopData, state: LoopState, config: RoundConfig, key, variables,
         init=None):
  val = None if data.x_val is None else (data.x_val, data.y_val)
  init = init if init is not None else (variables if config.warm_start else None)
  x, labels, trainable = state.training_set(data.x_pool)
  if not config.stacked:
    unlabeled = None
    if config.train.semi_supervised:
      unlabeled = jnp.zeros(x.shape[0], bool).at[:state.labeled.shape[0]].set(~state.labeled)
    r = training.fit(model, x, labels, trainable, key=key, config=config.train, val=val,
                     init_variables=init, unlabeled=unlabeled)
    return r.variables, {"train_steps": r.steps, "val_accuracy": r.best_val_accuracy,
                         "train_loss": r.train_loss}
  keys = jax.random.split(key, config.ensemble_size)
  r = ensemble_lib.fit_stacked(model, x, labels, trainable, keys=keys,
                               config=config.train, val=val, init_variables=init,
                               mesh=config.mesh)
  return r.variables, {"train_steps": int(r.steps.max()),
                       "val_accuracy": float(np.mean(r.best_val_accuracy)),
                       "train_loss": float(np.mean(r.train_loss))}


_MODEL_OUTPUTS = ("log_probs", "pre_logits", "predicted_loss")


def _predict(model, variables, x, config: RoundConfig, *, key=None, mc_samples=0,
             with_pre_logits=False, aux_keys=()) -> predict_lib.PoolOutputs:
  if not config.stacked:
    return predict_lib.predict(model, variables, x, key=key, mc_samples=mc_samples,
                               chunk_size=config.chunk_size, with_pre_logits=with_pre_logits,
                               aux_keys=aux_keys)
  if aux_keys:
    raise ValueError(f"model outputs {list(aux_keys)} are available for single models only "
                     "(ensemble_size=1 on one device)")
  lp, pre = ensemble_lib.predict_stacked(model, variables, x, key=key, mc_samples=mc_samples,
                                         chunk_size=config.chunk_size,
                                         with_pre_logits=with_pre_logits, mesh=config.mesh)
  return predict_lib.PoolOutputs(ensemble_lib.ensemble_log_probs(lp),
                                 None if pre is None else pre[0])


def _stop_reason(state: LoopState, metrics: dict[str, Any], config: RoundConfig) -> str | None:
  if state.num_labeled >= config.budget:
    return "budget"
  if config.target_accuracy is not None and metrics["accuracy"] >= config.target_accuracy:
    return "target_accuracy"
  if config.stabilizing is not None and config.stabilizing.stop and metrics.get("stabilized"):
    return "stabilizing_predictions"
  if int(jnp.sum(~state.labeled)) < config.query_size:
    return "pool_exhausted"
  return None


def _update_stabilizing(state: LoopState, log_probs_fn, config: RoundConfig,
                        metrics: dict[str, Any], num_classes: int) -> LoopState:
  """Compares this round's stop-set predictions with the last round's (Cohen's kappa)."""
  rule = config.stabilizing
  if rule is None:
    return state
  if state.stop_set.shape[0] == 0 or state.kappa_window.shape[0] != rule.window:
    raise ValueError("stabilizing predictions needs a state made with a stop set and "
                     f"kappa_window={rule.window} (init_loop_state(stop_set=..., kappa_window=...))")
  preds = jnp.argmax(acq_lib.mean_log_probs(log_probs_fn(state.stop_set)), -1).astype(jnp.int32)
  have_previous = bool(jnp.all(state.stop_predictions >= 0))
  kappa = (stopping.cohens_kappa(state.stop_predictions, preds, num_classes) if have_previous
           else jnp.float32(jnp.nan))
  window = stopping.update_window(state.kappa_window, kappa)
  full = bool(jnp.all(jnp.isfinite(window)))
  metrics.update(kappa=float(kappa) if have_previous else None,
                 kappa_window_mean=float(jnp.mean(window)) if full else None,
                 stabilized=stopping.should_stop(window, rule.threshold))
  return state.replace(stop_predictions=preds, kappa_window=window)


def _stopped(state: LoopState, metrics: dict[str, Any], oracle: Oracle) -> LoopState:
  metrics.update(selected=[], selected_class_histogram=[0] * oracle.num_classes,
                 selected_ood=0, time_score=0.0, time_select=0.0)
  return state.replace(round=state.round + 1, done=jnp.array(True))


def _label_selection(state: LoopState, selected: np.ndarray, oracle: Oracle,
                     metrics: dict[str, Any]) -> LoopState:
  new_labels = oracle.label(selected)
  state = add_labels(state, selected, new_labels)
  hist = np.bincount(new_labels[new_labels >= 0], minlength=oracle.num_classes)
  metrics.update(selected=selected.tolist(), selected_class_histogram=hist.tolist(),
                 selected_ood=int(np.sum(new_labels == OOD_LABEL)))
  return state.replace(round=state.round + 1)


def _round_keys(state: LoopState):
  """(train, candidates, score, select) keys of the state's current round."""
  return jax.random.split(jax.random.fold_in(state.key, state.round), 4)


def _ceal_finetune(model, data: LoopData, state: LoopState, config: RoundConfig, key, variables):
  """CEAL: pseudo-label confident unlabeled points, fine-tune on labeled + pseudo-labeled."""
  out = _predict(model, variables, data.x_pool, config)
  threshold = semi.ceal_threshold(config.ceal, int(state.round))
  mask, labels = semi.pseudo_labels(out.log_probs, threshold=threshold, where=~state.labeled)
  n_pseudo = int(jnp.sum(mask))
  if n_pseudo == 0:
    return variables, 0
  augmented = state.replace(labeled=state.labeled | mask,
                            labels=jnp.where(mask, labels, state.labels))
  variables, _ = _fit(model, data, augmented, config, jax.random.fold_in(key, 1), variables,
                      init=variables)
  return variables, n_pseudo


def al_round(state: LoopState, *, model: Model, data: LoopData, oracle: Oracle,
             config: RoundConfig, variables=None) -> tuple[LoopState, dict[str, Any], Any]:
  """One active learning round.

  Args:
    state: the loop state before the round.
    model: the model.
    data: the fixed splits as device arrays.
    oracle: labels selected points.
    config: :class:`RoundConfig`.
    variables: previous round's model variables (used only with ``config.warm_start``).

  Returns:
    ``(new_state, metrics, variables)``: metrics hold the labeled-set size the model was trained
    on, test accuracy / NLL / ECE, the wall time of train / score / select, the selected pool
    indices and their class histogram, and the stopping reason, if any.
  """
  acquisition = acq_lib.get_acquisition(config.acquisition)
  if bool(state.done):
    raise ValueError("the loop state is done (a stopping rule fired); nothing left to run")
  train_key, cand_key, score_key, select_key = _round_keys(state)
  n_labeled = state.num_labeled
  metrics: dict[str, Any] = {"round": int(state.round), "num_labels": n_labeled,
                             "num_trainable": int(jnp.sum(state.trainable))}

  t0 = time.perf_counter()
  variables, fit_info = _fit(model, data, state, config, train_key, variables)
  if config.ceal is not None:
    variables, n_pseudo = _ceal_finetune(model, data, state, config, train_key, variables)
    fit_info["num_pseudo_labels"] = n_pseudo
  test_out = _predict(model, variables, data.x_test, config)
  metrics.update(metrics_lib.classification_metrics(acq_lib.mean_log_probs(test_out.log_probs),
                                                    data.y_test))
  metrics.update(fit_info, time_train=time.perf_counter() - t0)
  state = _update_stabilizing(
      state, lambda idx: _predict(model, variables, data.x_pool[idx], config).log_probs, config,
      metrics, oracle.num_classes)

  metrics["stop"] = _stop_reason(state, metrics, config)
  if metrics["stop"] is not None:
    return _stopped(state, metrics, oracle), metrics, variables
  unlabeled = ~state.labeled
  n_unlabeled = int(jnp.sum(unlabeled))

  t1 = time.perf_counter()
  n_pool = unlabeled.shape[0]
  subsample = 0 < config.pool_subsample < n_unlabeled
  cand = (_scored_points(cand_key, state.labeled, config.pool_subsample) if subsample
          else jnp.arange(n_pool))
  where = unlabeled[cand]
  inputs: dict[str, Any] = {}
  if set(_MODEL_OUTPUTS) & set(acquisition.requires):
    out = _predict(model, variables, data.x_pool[cand], config, key=score_key,
                   mc_samples=config.mc_samples if "log_probs" in acquisition.requires else 0,
                   with_pre_logits="pre_logits" in acquisition.requires,
                   aux_keys=tuple(r for r in acquisition.requires if r == "predicted_loss"))
    inputs = out.as_inputs()
    jax.block_until_ready(inputs)
  if "model" in acquisition.requires:  # e.g. DFAL: the first model of a stack
    inputs.update(model=model, variables=jax.tree.map(lambda v: v[0], variables)
                  if config.stacked else variables)
  if {"model", "x"} & set(acquisition.requires):
    inputs["x"] = data.x_pool[cand]
  t2 = time.perf_counter()
  chosen, method_state = acq_lib.acquire_with_state(
      acquisition, inputs, key=select_key, k=config.query_size, where=where,
      selector=config.selector, beta=config.beta, method_state=state.method_state,
      options=dict(config.acquisition_options))
  selected = np.asarray(cand[chosen])
  metrics.update(time_score=t2 - t1, time_select=time.perf_counter() - t2)
  state = _label_selection(state.replace(method_state=method_state), selected, oracle, metrics)
  if config.adversarial_training:
    state = _add_adversarial(state, model, jax.tree.map(lambda v: v[0], variables)
                             if config.stacked else variables, data, selected, metrics)
  return state, metrics, variables


def _add_adversarial(state: LoopState, model, variables, data: LoopData, selected: np.ndarray,
                     metrics: dict[str, Any]) -> LoopState:
  """Stores ``x + r_DeepFool(x)`` of the newly labeled in-distribution points, with their labels."""
  if state.extra_y is None:
    raise ValueError("adversarial_training needs a state with extra slots "
                     "(init_loop_state(extra_capacity=budget, x_example=...))")
  labels = np.asarray(state.labels)[selected]
  keep = selected[labels >= 0]
  free = np.nonzero(np.asarray(state.extra_y) < 0)[0]
  if len(free) < len(keep):
    raise ValueError(f"no room for {len(keep)} adversarial examples ({len(free)} free slots); "
                     "raise extra_capacity")
  x = data.x_pool[keep]
  x_adv = x + acq_lib.deepfool_perturbation(model, variables, x)
  slots = free[:len(keep)]
  metrics["num_adversarial"] = int(len(keep))
  return state.replace(extra_x=state.extra_x.at[slots].set(x_adv.astype(state.extra_x.dtype)),
                       extra_y=state.extra_y.at[slots].set(jnp.asarray(labels[labels >= 0])))


def al_round_seeds(states: list[LoopState], *, model: Model, data: LoopData, oracle: Oracle,
                   config: RoundConfig, variables=None):
  """One round for several seeds at once (the seeds' models stacked and trained by ``vmap``).

  Every seed makes exactly the choices :func:`al_round` makes for it alone (its round keys are
  ``fold_in(key_seed, round)``; stacked training equals per-seed training). Training, test
  evaluation and pool scoring run as one program over the seed axis; selection runs seed by seed
  (batch-aware methods are host-driven loops).

  Args:
    states: the seeds' loop states, all at the same round and not done.
    model, data, oracle, config: as for :func:`al_round` (``config.ensemble_size`` must be 1).
    variables: stacked variables of the previous round (warm start).

  Returns:
    ``(states, metrics_per_seed, stacked_variables)``.
  """
  if config.ensemble_size != 1:
    raise ValueError("parallel seeds train one model per seed; use ensemble_size=1 (or run "
                     "ensemble seeds sequentially)")
  if config.ceal is not None or config.train.semi_supervised or config.adversarial_training:
    raise ValueError("CEAL, semi-supervised and adversarial training run in the sequential loop "
                     "(al_round)")
  if "predicted_loss" in acq_lib.get_acquisition(config.acquisition).requires:
    raise ValueError("LL4AL runs in the sequential loop (al_round): parallel seeds do not "
                     "return predicted losses")
  if len({int(s.round) for s in states}) != 1 or any(bool(s.done) for s in states):
    raise ValueError("parallel seeds must be at the same round and not done")
  acquisition = acq_lib.get_acquisition(config.acquisition)
  states = list(states)
  keys = [_round_keys(s) for s in states]
  t0 = time.perf_counter()
  val = None if data.x_val is None else (data.x_val, data.y_val)
  fit = ensemble_lib.fit_stacked(
      model, data.x_pool, jnp.stack([s.labels for s in states]),
      jnp.stack([s.trainable for s in states]), keys=jnp.stack([k[0] for k in keys]),
      config=config.train, val=val, init_variables=variables if config.warm_start else None,
      mesh=config.mesh)
  test_lp, _ = ensemble_lib.predict_stacked(model, fit.variables, data.x_test,
                                            chunk_size=config.chunk_size, mesh=config.mesh)
  t_train = time.perf_counter() - t0
  metrics = []
  for i, s in enumerate(states):
    m = {"round": int(s.round), "num_labels": s.num_labeled,
         "num_trainable": int(jnp.sum(s.trainable)), "train_steps": int(fit.steps[i]),
         "val_accuracy": float(fit.best_val_accuracy[i]), "train_loss": float(fit.train_loss[i]),
         "time_train": t_train, "parallel_seeds": len(states)}
    m.update(metrics_lib.classification_metrics(test_lp[i, 0], data.y_test))
    variables_i = jax.tree.map(lambda v, i=i: v[i], fit.variables)
    states[i] = _update_stabilizing(
        s, lambda idx, v=variables_i: predict_lib.predict(
            model, v, data.x_pool[idx], chunk_size=config.chunk_size).log_probs,
        config, m, oracle.num_classes)
    m["stop"] = _stop_reason(states[i], m, config)
    metrics.append(m)
  active = [i for i, m in enumerate(metrics) if m["stop"] is None]
  new_states = list(states)
  for i, m in enumerate(metrics):
    if m["stop"] is not None:
      new_states[i] = _stopped(states[i], m, oracle)
  if not active:
    return new_states, metrics, fit.variables

  t1 = time.perf_counter()
  n_pool = data.x_pool.shape[0]
  cands = []
  for i in active:
    n_unlabeled = int(jnp.sum(~states[i].labeled))
    sub = 0 < config.pool_subsample < n_unlabeled
    cands.append(_scored_points(keys[i][1], states[i].labeled, config.pool_subsample) if sub
                 else jnp.arange(n_pool))
  width = max(c.shape[0] for c in cands)
  valid = jnp.stack([jnp.arange(width) < c.shape[0] for c in cands])
  cands = jnp.stack([jnp.pad(c, (0, width - c.shape[0]), mode="edge") for c in cands])
  inputs_all = {}
  needs_outputs = bool({"log_probs", "pre_logits"} & set(acquisition.requires))
  if needs_outputs:
    lp, pre = ensemble_lib.predict_stacked(
        model, jax.tree.map(lambda v: v[jnp.asarray(active)], fit.variables),
        data.x_pool[cands], per_model_x=True, key=jnp.stack([keys[i][2] for i in active]),
        mc_samples=config.mc_samples, chunk_size=config.chunk_size, mesh=config.mesh,
        with_pre_logits="pre_logits" in acquisition.requires)
    inputs_all = {"log_probs": lp, "pre_logits": pre}
    jax.block_until_ready(inputs_all)
  t2 = time.perf_counter()
  for j, i in enumerate(active):
    inputs = {}
    if needs_outputs:
      inputs = {"log_probs": inputs_all["log_probs"][j]}
      if inputs_all["pre_logits"] is not None:
        inputs["pre_logits"] = inputs_all["pre_logits"][j]
    if "model" in acquisition.requires:
      inputs.update(model=model, variables=jax.tree.map(lambda v, i=i: v[i], fit.variables))
    if {"model", "x"} & set(acquisition.requires):
      inputs["x"] = data.x_pool[cands[j]]
    where = ~states[i].labeled[cands[j]] & valid[j]
    chosen, method_state = acq_lib.acquire_with_state(
        acquisition, inputs, key=keys[i][3], k=config.query_size, where=where,
        selector=config.selector, beta=config.beta, method_state=states[i].method_state,
        options=dict(config.acquisition_options))
    metrics[i].update(time_score=t2 - t1, time_select=0.0)
    new_states[i] = _label_selection(states[i].replace(method_state=method_state),
                                     np.asarray(cands[j][chosen]), oracle, metrics[i])
  t3 = time.perf_counter()
  for i in active:
    metrics[i]["time_select"] = t3 - t2
  return new_states, metrics, fit.variables
