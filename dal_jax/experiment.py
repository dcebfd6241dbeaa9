"""Running a configured experiment in a workdir: several seeds, checkpoints, resume.

Workdir layout::

  workdir/config.json                  the resolved config (a rerun must match it)
  workdir/seed_<s>/metrics.jsonl       one JSON line per round (metrics + selected indices)
  workdir/seed_<s>/checkpoints/<r>/    orbax checkpoint of the LoopState after round r
  workdir/seed_<s>/final_state.npz     labeled mask, labels, acquisition round of every point

A killed run resumes from its latest checkpoint and, because round r's randomness is
``fold_in(key, r)``, ends with the same labeled set as an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from dal_jax import acquisition as acq_lib
from dal_jax import data as data_lib
from dal_jax import ensemble as ensemble_lib
from dal_jax import loop as loop_lib
from dal_jax import models as models_lib
from dal_jax import parallel
from dal_jax import semi
from dal_jax import stopping
from dal_jax import training

# Config fields that may change between a run and its resumption without changing its results.
_RESUMABLE_FIELDS = ("progress",)
# Fields added after workdirs were first written, with the value that reproduces older runs: a
# stored config without them matches a current config holding these values.
_ADDED_FIELDS = {"ensemble_size": 1, "num_devices": 0, "distributed": False,
                 "parallel_seeds": False, "stabilizing_stop_set": 0, "stabilizing_window": 3,
                 "stabilizing_threshold": 0.99, "stop_on_stabilizing": False,
                 "ceal_delta0": 0.0, "ceal_decay": 0.005, "acquisition_options": None,
                 "adversarial_training": False}
_ADDED_TRAIN_FIELDS = {"mixup_alpha": 0.0, "loss_prediction_weight": 1.0, "ranking_margin": 1.0,
                       "unlabeled_weight": 0.0, "unlabeled_ratio": 1,
                       "confidence_threshold": 0.95, "waal_alpha": 0.0,
                       "waal_gradient_penalty": 10.0}


def _unset(value):
  """An options dict whose values are all None means the same as no dict."""
  if isinstance(value, dict) and all(v is None for v in value.values()):
    return None
  return value


def config_to_dict(config: ml_collections.ConfigDict) -> dict[str, Any]:
  return json.loads(config.to_json_best_effort(sort_keys=True))


def check_config(config: ml_collections.ConfigDict) -> None:
  """Validates names and ranges before any work starts (clear errors for typos)."""
  acq = acq_lib.get_acquisition(config.acquisition)
  acq_lib.get_selector(config.selector)
  if acquisition_options(config) and not acq.stateful:
    raise ValueError(f"config.acquisition_options is for learned acquisitions (dal, vaal, "
                     f"waal); {config.acquisition!r} takes none")
  if config.model not in models_lib.MODELS:
    raise ValueError(f"unknown model {config.model!r}; valid models: {sorted(models_lib.MODELS)}")
  for field in ("query_size", "initial_size", "budget", "num_seeds", "ensemble_size"):
    if int(config[field]) < 1:
      raise ValueError(f"config.{field} must be >= 1, got {config[field]}")
  if config.mc_samples < 0:
    raise ValueError(f"config.mc_samples must be >= 0, got {config.mc_samples}")
  semi_sup = (config.train.get("unlabeled_weight", 0.0) > 0
              or config.train.get("waal_alpha", 0.0) > 0)
  if config.get("parallel_seeds", False) and (config.get("ceal_delta0", 0.0) > 0 or semi_sup
                                               or "predicted_loss" in acq.requires
                                               or config.get("adversarial_training", False)):
    raise ValueError("CEAL, semi-supervised training, adversarial training and LL4AL run in the "
                     "sequential loop; set parallel_seeds=False")
  if semi_sup and config.get("ensemble_size", 1) > 1:
    raise ValueError("training with unlabeled inputs (train.unlabeled_weight > 0 or "
                     "train.waal_alpha > 0) trains one model; set ensemble_size=1")
  if config.get("parallel_seeds", False) and config.get("ensemble_size", 1) > 1:
    raise ValueError("parallel_seeds stacks one model per seed; it cannot be combined with "
                     "ensemble_size > 1 (run ensemble seeds sequentially)")
  if config.budget < config.initial_size:
    raise ValueError(f"config.budget={config.budget} is smaller than config.initial_size="
                     f"{config.initial_size}")


def _prepare_workdir(config, workdir: str) -> None:
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, "config.json")
  current = config_to_dict(config)
  if os.path.exists(path):
    with open(path) as f:
      try:
        stored = json.load(f)
      except json.JSONDecodeError as e:
        raise ValueError(f"{path} is corrupt ({e}); remove it or use another workdir") from e
    if isinstance(stored.get("train"), dict):
      for field, default in _ADDED_TRAIN_FIELDS.items():
        if field not in stored["train"] and current.get("train", {}).get(field) == default:
          stored["train"][field] = default
    keys = set(stored) | set(current)
    differ = sorted(
        k for k in keys if k not in _RESUMABLE_FIELDS and stored.get(k) != current.get(k)
        and not (k not in stored and k in _ADDED_FIELDS and _unset(current.get(k)) ==
                 _unset(_ADDED_FIELDS[k])))
    if differ:
      details = ", ".join(f"{k}: {stored.get(k)!r} -> {current.get(k)!r}" for k in differ)
      raise ValueError(f"workdir {workdir!r} holds a run with another config ({details}); "
                       "use a new --workdir or the same config to resume")
  else:
    with open(path, "w") as f:
      json.dump(current, f, indent=2, sort_keys=True)


def train_config(config) -> training.TrainConfig:
  t = config.train
  return training.TrainConfig(batch_size=t.batch_size, learning_rate=t.learning_rate,
                              weight_decay=t.weight_decay, max_steps=t.max_steps,
                              eval_every=t.eval_every, patience=t.patience,
                              mixup_alpha=t.get("mixup_alpha", 0.0),
                              **{f: t.get(f, d) for f, d in _ADDED_TRAIN_FIELDS.items()
                                 if f != "mixup_alpha"})


def make_mesh(config):
  """The device mesh for a config: ``num_devices`` devices (0 = all); None on a single device."""
  n = config.get("num_devices", 0) or jax.device_count()
  return parallel.make_mesh(n) if n > 1 else None


def stabilizing_rule(config) -> stopping.StabilizingPredictions | None:
  size = config.get("stabilizing_stop_set", 0)
  if not size:
    return None
  return stopping.StabilizingPredictions(
      stop_set_size=size, window=config.get("stabilizing_window", 3),
      threshold=config.get("stabilizing_threshold", 0.99),
      stop=config.get("stop_on_stabilizing", False))


def round_config(config, mesh=None) -> loop_lib.RoundConfig:
  return loop_lib.RoundConfig(
      ensemble_size=config.get("ensemble_size", 1), mesh=mesh,
      stabilizing=stabilizing_rule(config),
      ceal=(semi.CEAL(delta0=config.ceal_delta0, decay=config.get("ceal_decay", 0.005))
            if config.get("ceal_delta0", 0.0) > 0 else None),
      acquisition=config.acquisition, query_size=config.query_size,
      mc_samples=config.mc_samples, selector=config.selector, beta=config.beta,
      pool_subsample=config.pool_subsample, chunk_size=config.chunk_size, budget=config.budget,
      target_accuracy=config.target_accuracy, warm_start=config.warm_start,
      train=train_config(config), acquisition_options=acquisition_options(config),
      adversarial_training=config.get("adversarial_training", False))


def acquisition_options(config) -> tuple[tuple[str, Any], ...]:
  """``config.acquisition_options`` (a dict) as sorted, hashable ``(name, value)`` pairs."""
  opts = config.get("acquisition_options", None)
  opts = {} if opts is None else (opts.to_dict() if hasattr(opts, "to_dict") else dict(opts))
  return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in opts.items()
                      if v is not None))


def load_splits(config) -> data_lib.Splits:
  train, test = data_lib.load_dataset(config.dataset, data_dir=config.data_dir)
  return data_lib.make_splits(train, test, seed=config.split_seed, val_size=config.val_size,
                              pool_size=config.pool_size, test_size=config.test_size,
                              imbalance_ratio=config.imbalance_ratio,
                              ood_fraction=config.ood_fraction)


class _Checkpoints:
  """Orbax checkpoints of the loop state (and, with warm start, the model variables)."""

  def __init__(self, directory: str, keep: int):
    self.manager = ocp.CheckpointManager(
        os.path.abspath(directory),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

  @staticmethod
  def _tree(state: loop_lib.LoopState, variables) -> dict[str, Any]:
    tree = {"labeled": state.labeled, "labels": state.labels,
            "acquired_round": state.acquired_round, "round": state.round,
            "key": jax.random.key_data(state.key), "done": state.done}
    if state.stop_set.size:  # orbax cannot save zero-size arrays: only when the rule is on
      tree.update(stop_set=state.stop_set, stop_predictions=state.stop_predictions,
                  kappa_window=state.kappa_window)
    if state.extra_x is not None:  # adversarial training examples
      tree.update(extra_x=state.extra_x, extra_y=state.extra_y)
    if jax.tree.leaves(state.method_state):  # a learned acquisition's own network
      tree["method_state"] = jax.tree.leaves(state.method_state)
    if variables is not None:
      tree["variables"] = jax.tree.leaves(variables)
    return tree

  def save(self, state, variables) -> None:
    self.manager.save(int(state.round), args=ocp.args.StandardSave(self._tree(state, variables)))
    self.manager.wait_until_finished()

  def restore(self, template_state, template_variables):
    step = self.manager.latest_step()
    if step is None:
      return None
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct,
                          self._tree(template_state, template_variables))
    try:
      tree = self.manager.restore(step, args=ocp.args.StandardRestore(target))
    except Exception as e:  # orbax raises several types for unreadable checkpoints
      raise ValueError(f"checkpoint {step} in {self.manager.directory} cannot be restored "
                       f"({type(e).__name__}: {e}); delete it to restart that seed") from e
    state = loop_lib.LoopState(
        labeled=tree["labeled"], labels=tree["labels"], acquired_round=tree["acquired_round"],
        round=tree["round"], key=jax.random.wrap_key_data(tree["key"]), done=tree["done"],
        stop_set=tree.get("stop_set", template_state.stop_set),
        stop_predictions=tree.get("stop_predictions", template_state.stop_predictions),
        kappa_window=tree.get("kappa_window", template_state.kappa_window),
        method_state=jax.tree.unflatten(jax.tree.structure(template_state.method_state),
                                        tree.get("method_state", [])),
        extra_x=tree.get("extra_x"), extra_y=tree.get("extra_y"))
    variables = None
    if template_variables is not None:
      variables = jax.tree.unflatten(jax.tree.structure(template_variables), tree["variables"])
    return state, variables

  def close(self):
    self.manager.close()


def _read_metrics(path: str, rounds_done: int) -> list[dict[str, Any]]:
  """Metric lines of completed rounds (a line past the checkpoint is redone on resume)."""
  if not os.path.exists(path):
    return []
  records = []
  with open(path) as f:
    for line in f:
      if line.strip():
        try:
          rec = json.loads(line)
        except json.JSONDecodeError:
          break  # a line cut off by a kill: that round is redone
        if rec["round"] < rounds_done:
          records.append(rec)
  return records


def _log_round(tag: str, m: dict[str, Any]) -> None:
  msg = (f"[{tag}] round {m['round']:3d}  labels {m['num_labels']:5d}  acc {m['accuracy']:.4f}  "
         f"nll {m['nll']:.3f}  ece {m['ece']:.3f}  | train {m['time_train']:.1f}s "
         f"({m['train_steps']} steps)  score {m['time_score']:.1f}s  "
         f"select {m['time_select']:.2f}s"
         + (f"  kappa {m['kappa']:.3f}" if m.get("kappa") is not None else "")
         + (f"  -> stop: {m['stop']}" if m["stop"] else ""))
  print(msg, flush=True)


def build_model(config, splits: data_lib.Splits) -> models_lib.Model:
  """The config's model; with an acquisition that reads predicted losses (LL4AL), the model
  carries a loss-prediction module."""
  model = models_lib.get_model(config.model, splits.pool.x.shape[1:], splits.pool.num_classes,
                               **config.model_kwargs)
  if "predicted_loss" in acq_lib.get_acquisition(config.acquisition).requires:
    model = models_lib.with_loss_prediction(model)
  if config.train.get("waal_alpha", 0.0) > 0:
    model = models_lib.with_critic(model)
  return model


class _Context(NamedTuple):
  model: models_lib.Model
  oracle: loop_lib.Oracle
  rc: loop_lib.RoundConfig
  data: loop_lib.LoopData
  mesh: Any


def _context(config, splits: data_lib.Splits, model=None) -> _Context:
  pool = splits.pool
  mesh = make_mesh(config)
  data = loop_lib.LoopData(
      x_pool=jnp.asarray(pool.x),
      x_val=jnp.asarray(splits.val.x) if len(splits.val) else None,
      y_val=jnp.asarray(splits.val.y) if len(splits.val) else None,
      x_test=jnp.asarray(splits.test.x), y_test=jnp.asarray(splits.test.y))
  return _Context(model=model or build_model(config, splits),
                  oracle=loop_lib.simulated_oracle(pool.y, pool.num_classes),
                  rc=round_config(config, mesh), data=data, mesh=mesh)


class _SeedRun:
  """One seed's files: checkpoints, metrics lines, final state; restore on construction."""

  def __init__(self, config, splits: data_lib.Splits, seed: int, workdir: str, ctx: _Context, *,
               single_model_variables: bool = False):
    os.makedirs(workdir, exist_ok=True)
    self.config, self.splits, self.seed, self.workdir, self.ctx = (config, splits, seed, workdir,
                                                                   ctx)
    pool, c = splits.pool, splits.pool.num_classes
    init_key, run_key = jax.random.split(jax.random.key(seed))
    initial_y = np.where(pool.y == data_lib.OOD_LABEL, -1, pool.y)
    first = loop_lib.initial_indices(init_key, initial_y, config.initial_size,
                                     balanced=config.initial_balanced, num_classes=c)
    rule = ctx.rc.stabilizing
    stop_set = None
    if rule is not None:
      if not 0 < rule.stop_set_size <= len(pool):
        raise ValueError(f"stabilizing_stop_set={rule.stop_set_size} must be in [1, {len(pool)}]")
      stop_set = np.sort(np.asarray(jax.random.choice(
          jax.random.fold_in(init_key, 1), len(pool), (rule.stop_set_size,), replace=False)))
    method_state = loop_lib.init_method_state(config.acquisition, jax.random.fold_in(init_key, 2),
                                              ctx.model, ctx.data.x_pool[:1], c,
                                              dict(ctx.rc.acquisition_options))
    self.state = loop_lib.init_loop_state(run_key, len(pool), first, ctx.oracle,
                                          stop_set=stop_set,
                                          kappa_window=0 if rule is None else rule.window,
                                          method_state=method_state,
                                          extra_capacity=config.budget
                                          if ctx.rc.adversarial_training else 0,
                                          x_example=ctx.data.x_pool[:1])
    self.variables = None
    if config.warm_start:  # a template for restoring checkpointed variables
      x1, m = ctx.data.x_pool[:1], ctx.rc.ensemble_size
      self.variables = (ctx.model.init(jax.random.key(0), x1)
                        if single_model_variables or not ctx.rc.stacked else
                        ensemble_lib.init_stacked(ctx.model, jax.random.split(jax.random.key(0),
                                                                              m), x1))
    self.ckpt = _Checkpoints(os.path.join(workdir, "checkpoints"),
                             keep=config.checkpoints_to_keep)
    self.metrics_path = os.path.join(workdir, "metrics.jsonl")
    restored = self.ckpt.restore(self.state, self.variables)
    if restored is not None:
      self.state, self.variables = restored
      logging.info("resuming %s from round %d", workdir, int(self.state.round))
    self.records = _read_metrics(self.metrics_path, int(self.state.round))
    with open(self.metrics_path, "w") as f:  # drop lines of rounds that will be redone
      f.writelines(json.dumps(r) + "\n" for r in self.records)

  def record(self, state, metrics: dict[str, Any], variables) -> None:
    metrics.update(seed=self.seed, acquisition=self.config.acquisition, time=time.time(),
                   num_devices=1 if self.ctx.mesh is None else self.ctx.mesh.size,
                   ensemble_size=self.ctx.rc.ensemble_size)
    if self.config.progress:
      _log_round(f"{self.config.acquisition} seed {self.seed}", metrics)
    with open(self.metrics_path, "a") as f:
      f.write(json.dumps(metrics) + "\n")
      f.flush()
      os.fsync(f.fileno())
    self.ckpt.save(state, variables if self.config.warm_start else None)
    self.state, self.variables = state, variables
    self.records.append(metrics)

  def close(self) -> None:
    self.ckpt.close()
    if bool(self.state.done):
      np.savez(os.path.join(self.workdir, "final_state.npz"),
               labeled=np.asarray(self.state.labeled), labels=np.asarray(self.state.labels),
               acquired_round=np.asarray(self.state.acquired_round),
               pool_source=self.splits.pool_source)


def run_seed(config, splits: data_lib.Splits, seed: int, workdir: str, *,
             max_rounds: int | None = None,
             model: models_lib.Model | None = None) -> list[dict[str, Any]]:
  """Runs (or resumes) one seed of an experiment; returns its per-round metrics.

  Args:
    config: the experiment config.
    splits: the fixed data splits.
    seed: run seed (model init, data order, dropout, acquisition randomness).
    workdir: this seed's directory.
    max_rounds: stop after this many rounds *in this call* (for tests and time-boxed jobs; the
      run stays resumable).
    model: the model (built from the config when omitted; pass one to share compiled code).
  """
  ctx = _context(config, splits, model)
  run = _SeedRun(config, splits, seed, workdir, ctx)
  try:
    rounds = 0
    while not bool(run.state.done) and (max_rounds is None or rounds < max_rounds):
      state, m, variables = loop_lib.al_round(run.state, model=ctx.model, data=ctx.data,
                                              oracle=ctx.oracle, config=ctx.rc,
                                              variables=run.variables)
      run.record(state, m, variables)
      rounds += 1
  finally:
    run.close()
  return run.records


def run_seeds_parallel(config, splits: data_lib.Splits, seeds: list[int], workdir: str, *,
                       max_rounds: int | None = None,
                       model: models_lib.Model | None = None) -> dict[int, list[dict[str, Any]]]:
  """Runs several seeds as one stacked program per round (:func:`loop.al_round_seeds`).

  Each seed keeps its own directory, checkpoints and metrics, and makes the same choices as
  :func:`run_seed`. Seeds that stop early drop out of the stack; a seed behind the others after a
  resume first catches up on its own.
  """
  ctx = _context(config, splits, model)
  runs = [_SeedRun(config, splits, s, os.path.join(workdir, f"seed_{s}"), ctx,
                   single_model_variables=True) for s in seeds]
  try:
    rounds = 0
    while max_rounds is None or rounds < max_rounds:
      live = [r for r in runs if not bool(r.state.done)]
      if not live:
        break
      target = max(int(r.state.round) for r in live)
      behind = [r for r in live if int(r.state.round) < target]
      for r in behind:  # after a resume, seeds may be a round apart
        state, m, variables = loop_lib.al_round(r.state, model=ctx.model, data=ctx.data,
                                                oracle=ctx.oracle, config=ctx.rc,
                                                variables=r.variables)
        r.record(state, m, variables)
      if behind:
        continue
      stacked_vars = None
      if config.warm_start:
        stacked_vars = jax.tree.map(lambda *v: jnp.stack(v), *[r.variables for r in live])
      states, metrics, new_vars = loop_lib.al_round_seeds(
          [r.state for r in live], model=ctx.model, data=ctx.data, oracle=ctx.oracle,
          config=ctx.rc, variables=stacked_vars)
      for i, r in enumerate(live):
        r.record(states[i], metrics[i], jax.tree.map(lambda v, i=i: v[i], new_vars))
      rounds += 1
  finally:
    for r in runs:
      r.close()
  return {r.seed: r.records for r in runs}


def run_experiment(config, workdir: str, *, max_rounds: int | None = None,
                   splits: data_lib.Splits | None = None) -> dict[int, list[dict[str, Any]]]:
  """Runs all seeds of an experiment in ``workdir`` (resuming whatever is there).

  With ``config.parallel_seeds`` the seeds' rounds run as one stacked program; otherwise one seed
  after another.

  Returns:
    ``{seed: [per-round metrics]}``.
  """
  check_config(config)
  parallel.maybe_initialize_distributed(config.get("distributed", False))
  _prepare_workdir(config, workdir)
  splits = splits or load_splits(config)
  model = build_model(config, splits)
  seeds = [config.seed + i for i in range(config.num_seeds)]
  if config.get("parallel_seeds", False) and len(seeds) > 1:
    return run_seeds_parallel(config, splits, seeds, workdir, max_rounds=max_rounds, model=model)
  return {seed: run_seed(config, splits, seed, os.path.join(workdir, f"seed_{seed}"),
                         max_rounds=max_rounds, model=model) for seed in seeds}
