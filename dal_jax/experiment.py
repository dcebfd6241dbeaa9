"""Running a configured experiment in a workdir: build from the config, drive the seeds, resume.

``run_experiment(config, workdir)`` validates the config (:mod:`dal_jax.config`), takes the
workdir's lock, checks the checkpoints already there against the config, builds the method,
learner and data once, and runs every seed's rounds through :func:`dal_jax.loop.al_round`: one
seed after another, ``workers`` seeds at a time in threads, or (``parallel_seeds``) all seeds as
one stack — the same code with a stack of G seeds instead of one. Files are described in
:mod:`dal_jax.workdir`.

A killed run resumes from its latest checkpoint and, because round r's randomness is
``fold_in(key, r)``, ends with the same labeled set as an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dal_jax import acquisition as acq_lib
from dal_jax import config as config_lib
from dal_jax import data as data_lib
from dal_jax import learner as learner_lib
from dal_jax import loop as loop_lib
from dal_jax import methods as methods_lib
from dal_jax import models as models_lib
from dal_jax import parallel
from dal_jax import selfsup
from dal_jax import stopping
from dal_jax import streaming
from dal_jax import tasks as tasks_lib
from dal_jax import training
from dal_jax import workdir as workdir_lib


def load_splits(config) -> data_lib.Splits:
  train, test = data_lib.load_dataset(config.dataset, data_dir=config.data_dir)
  return data_lib.make_splits(train, test, seed=config.split_seed, val_size=config.val_size,
                              pool_size=config.pool_size, test_size=config.test_size,
                              imbalance_ratio=config.imbalance_ratio,
                              ood_fraction=config.ood_fraction)


def model_for(config, input_shape, num_classes: int) -> models_lib.Model:
  """The config's model with its options (``config.models.<model>``) for inputs of
  ``input_shape`` and ``num_classes`` classes."""
  options = config_lib.plain(config.models.get(config.model, {}))
  valid = config_lib.model_options(config.model)
  unknown = sorted(set(options) - set(valid))
  if unknown:
    raise ValueError(f"model {config.model!r} has no options {unknown}; valid: {sorted(valid)}")
  return models_lib.get_model(config.model, tuple(input_shape), num_classes, **options)


def build_model(config, splits: data_lib.Splits) -> models_lib.Model:
  """The config's model for the splits' inputs and classes."""
  return model_for(config, splits.pool.x.shape[1:], splits.pool.num_classes)


def build_method(config) -> methods_lib.Method:
  """The acquisition's method with the training-only ``add_methods`` and the stopping hooks."""
  main = methods_lib.get_method(config.acquisition,
                                **config_lib.method_kwargs(config, config.acquisition))
  if main.acquisition is None:
    raise ValueError(f"{config.acquisition!r} only changes training; set it in "
                     "config.add_methods and choose an acquisition")
  extra = [methods_lib.get_method(name, **config_lib.method_kwargs(config, name))
           for name in config_lib.add_method_names(config)]
  method = methods_lib.combine(main, *extra)
  if config.stabilizing_stop_set:
    rule = stopping.StabilizingPredictions(
        stop_set_size=config.stabilizing_stop_set, window=config.stabilizing_window,
        threshold=config.stabilizing_threshold, stop=config.stop_on_stabilizing)
    method = method._replace(hooks=method.hooks + (stopping.stabilizing_hook(rule),))
  return method


def make_mesh(config):
  """The device mesh for a config: ``num_devices`` devices (0 = all); None on a single device."""
  n = config.num_devices or jax.device_count()
  return parallel.make_mesh(n) if n > 1 else None


class Run(NamedTuple):
  """Everything built from a config, shared by its seeds."""

  config: Any
  splits: data_lib.Splits
  method: methods_lib.Method
  learner: learner_lib.Learner
  round_config: loop_lib.RoundConfig
  data: loop_lib.LoopData
  oracle: loop_lib.Oracle
  setup: methods_lib.Setup

  @property
  def num_devices(self) -> int:
    return 1 if self.learner.mesh is None else self.learner.mesh.size


def selfsup_cache_dir(config) -> str:
  """Where the pools' SimCLR embeddings are cached (next to the prepared datasets)."""
  root = config.data_dir or os.path.join(os.path.expanduser("~"), "tensorflow_datasets")
  return os.path.join(root, "dal_selfsup")


def pool_embeddings(config, splits: data_lib.Splits):
  """``(embeddings, encoder variables)``: the pool's embeddings when ``config.embeddings`` asks
  for them (SimCLR: :func:`dal_jax.selfsup.pool_embeddings`, cached per pool; PCA:
  :func:`dal_jax.selfsup.pca_embeddings`) and the SimCLR encoder when ``selfsup_init`` starts the
  task model from it; None for what is not asked."""
  if not (config.embeddings or config.selfsup_init):
    return None, None
  if config.embeddings == "pca" and not config.selfsup_init:
    return selfsup.pca_embeddings(splits.pool.x), None
  model = build_model(config, splits)
  description = {"model": config.model, "options": config_lib.plain(
      config.models.get(config.model, {}))}
  embeddings, encoder = selfsup.pool_embeddings(
      model, splits.pool.x, cache_dir=selfsup_cache_dir(config), model_description=description,
      config=selfsup.SimCLRConfig(steps=config.selfsup_steps), progress=config.progress)
  if config.embeddings == "pca":
    return selfsup.pca_embeddings(splits.pool.x), encoder
  return (embeddings if config.embeddings else None), encoder


def pool_on_disk(x: np.ndarray, path: str) -> streaming.RecordPool:
  """The pool ``x`` as ``path.array_record`` (written once by process 0, as uint8 when the
  values are k/255 exactly, else float32; reused while its digest matches) read back lazily."""
  x = np.asarray(x, np.float32)
  digest = hashlib.sha256(x.tobytes()).hexdigest()
  if parallel.is_writer():
    try:
      current = streaming.RecordPool(path).meta.get("digest")
    except ValueError:
      current = None
    if current != digest:
      as_bytes = np.round(x * 255.0)
      exact = bool(np.array_equal((as_bytes / 255.0).astype(np.float32), x))
      values = as_bytes.astype(np.uint8) if exact else x
      tmp = path + ".writing"
      streaming.write_pool(tmp, (values[i:i + 4096] for i in range(0, len(values), 4096)),
                           shape=x.shape[1:], dtype="uint8" if exact else "float32",
                           meta={"digest": digest})
      os.replace(tmp + ".array_record", path + ".array_record")
      os.replace(tmp + ".json", path + ".json")
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices("dal_jax pool on disk")
  pool = streaming.RecordPool(path)
  if pool.meta.get("digest") != digest:
    raise ValueError(f"{path}.array_record does not hold this run's pool (another run wrote it "
                     "meanwhile?)")
  return pool


def build_learner(config, model: models_lib.Model, method: methods_lib.Method | None = None, *,
                  mesh=None) -> learner_lib.Learner:
  """The config's learner of ``model``: its training recipe, the task's loss and metrics, and
  the method's loss terms (none without a method: a plain supervised fit). The runner and
  projects both build theirs here."""
  return learner_lib.Learner(model=model, config=training.TrainConfig(**config.train),
                             terms=method.loss_terms if method is not None else (),
                             mesh=mesh, chunk_size=config.chunk_size,
                             task=tasks_lib.get_task(config.task))


def round_config(config, **changes) -> loop_lib.RoundConfig:
  """The config's :class:`dal_jax.loop.RoundConfig` (``changes`` replace fields: a project's
  ``query_size`` and budget)."""
  rc = loop_lib.RoundConfig(query_size=config.query_size, mc_samples=config.mc_samples,
                            pool_subsample=config.pool_subsample, budget=config.budget,
                            target_accuracy=config.target_accuracy,
                            warm_start=config.warm_start, ensemble_size=config.ensemble_size,
                            region_size=config.region_size,
                            region_shape=config.region_shape)
  return rc._replace(**changes)


def pool_superpixels(config, x_pool: np.ndarray) -> np.ndarray | None:
  """``[N, H, W]`` SLIC superpixels of the pool for ``region_shape='superpixel'`` (None
  otherwise)."""
  if not (config.region_size and config.region_shape == "superpixel"):
    return None
  t0 = time.perf_counter()
  segments = acq_lib.superpixels(np.asarray(x_pool), config.region_size)
  if config.progress:
    print(f"superpixels: {segments.shape[0]} images, {segments.max(axis=(1, 2)).mean() + 1:.1f} "
          f"per image ({time.perf_counter() - t0:.1f}s)", flush=True)
  return segments


def build(config, splits: data_lib.Splits, *, workdir: str | None = None) -> Run:
  """Everything a config's seeds share. ``workdir`` holds the pool file when
  ``config.pool_on_disk`` asks for one."""
  pool = splits.pool
  model = build_model(config, splits)
  embeddings, encoder = pool_embeddings(config, splits)
  if config.selfsup_init:
    model = selfsup.init_from_encoder(model, encoder)
  method = build_method(config)
  learner = build_learner(config, model, method, mesh=make_mesh(config))
  rc = round_config(config)
  has_val, has_test = len(splits.val) > 0, len(splits.test) > 0
  if config.pool_on_disk:
    if workdir is None:
      raise ValueError("config.pool_on_disk needs a workdir to keep the pool in")
    x_pool = pool_on_disk(pool.x, os.path.join(workdir, "pool"))
    splits = splits._replace(pool=data_lib.Dataset(x_pool, pool.y, pool.num_classes))
  else:
    x_pool = jnp.asarray(pool.x)
  data = loop_lib.LoopData(
      x_pool=x_pool,
      x_val=jnp.asarray(splits.val.x) if has_val else None,
      y_val=jnp.asarray(splits.val.y) if has_val else None,
      x_test=jnp.asarray(splits.test.x) if has_test else None,
      y_test=jnp.asarray(splits.test.y) if has_test else None,
      embeddings=None if embeddings is None else jnp.asarray(embeddings),
      segments=pool_superpixels(config, pool.x))
  return Run(config=config, splits=splits, method=method, learner=learner, round_config=rc,
             data=data, oracle=loop_lib.simulated_oracle(pool.y, pool.num_classes,
                                                      learner.task.label_classes),
             setup=loop_lib.make_setup(model, data.x_pool, pool.num_classes, config.budget))


def _fmt(m: dict[str, Any], key: str, spec: str) -> str:
  return format(m[key], spec) if m.get(key) is not None else "-"


def _log_round(tag: str, m: dict[str, Any]) -> None:
  n = m["num_labels"]  # with region queries, labeled pixels in images' worth
  count = f"{n:5d}" if isinstance(n, (int, np.integer)) else f"{n:7.2f}"
  msg = (f"[{tag}] round {m['round']:3d}  labels {count}  "
         + (f"miou {m['miou']:.4f}  " if m.get("miou") is not None else "")
         + ("".join(f"{k} {_fmt(m, k, '.4f')}  " for k in ("map50", "map")) if "map50" in m
            else f"acc {_fmt(m, 'accuracy', '.4f')}  nll {_fmt(m, 'nll', '.3f')}  "
            f"ece {_fmt(m, 'ece', '.3f')}  ")
         + f"| train {m['time_train']:.1f}s "
         f"({m['train_steps']} steps)  score {m['time_score']:.1f}s  "
         f"select {m['time_select']:.2f}s"
         + (f"  kappa {m['kappa']:.3f}" if m.get("kappa") is not None else "")
         + (f"  -> stop: {m['stop']}" if m["stop"] else ""))
  print(msg, flush=True)


class SeedRun:
  """One seed's state, checkpoints and metrics; restores itself on construction."""

  def __init__(self, run: Run, seed: int, workdir: str):
    config, pool = run.config, run.splits.pool
    os.makedirs(workdir, exist_ok=True)
    self.run, self.seed, self.workdir = run, seed, workdir
    self.tag = f"{config.acquisition} seed {seed}"
    init_key, run_key = jax.random.split(jax.random.key(seed))
    initial_y = np.where(pool.y == data_lib.OOD_LABEL, -1, pool.y)
    if config.cold_start == "random":
      first = loop_lib.initial_indices(init_key, initial_y, config.initial_size,
                                       balanced=config.initial_balanced,
                                       num_classes=pool.num_classes)
    else:
      emb = run.data.embeddings if run.data.embeddings is not None else run.data.x_pool
      first = loop_lib.cold_start_indices(init_key, config.cold_start, emb, config.initial_size,
                                          subsample=config.pool_subsample)
    self.state = loop_lib.init_loop_state(
        run_key, len(pool), first, run.oracle.label(first),
        methods=loop_lib.init_method_state(run.method, init_key, run.setup))
    self.variables = None
    if config.warm_start:  # a template for restoring checkpointed variables
      self.variables = run.learner.init(
          learner_lib.member_keys(jax.random.key(0), config.ensemble_size), run.data.x_pool[:1])
    self.ckpt = workdir_lib.SeedCheckpoints(os.path.join(workdir, "checkpoints"),
                                            keep=config.checkpoints_to_keep)
    self.metrics = workdir_lib.MetricsFile(os.path.join(workdir, "metrics.jsonl"))
    self.records: list[dict[str, Any]] = []
    if self.ckpt.latest() is not None:
      tree, meta = self.ckpt.restore({"state": self.state, "variables": self.variables})
      self.state, self.variables, self.records = tree["state"], tree["variables"], meta["records"]
      if config.progress:
        print(f"[{self.tag}] " + (f"finished ({len(self.records)} rounds)" if self.done else
                                  f"resuming after round {int(self.state.round) - 1}"),
              flush=True)
    self.metrics.sync(self.records)

  @property
  def done(self) -> bool:
    return bool(self.state.done)

  def record(self, state, metrics: dict[str, Any], variables) -> None:
    config = self.run.config
    parallel.check_same_everywhere(metrics.get("selected", []), f"[{self.tag}] round "
                                   f"{metrics['round']}'s selection")
    metrics.update(seed=self.seed, acquisition=config.acquisition, time=time.time(),
                   num_devices=self.run.num_devices, ensemble_size=config.ensemble_size)
    records = self.records + [metrics]
    self.ckpt.save(int(state.round), {"state": state,
                                      "variables": variables if config.warm_start else None},
                   {"schema": config_lib.SCHEMA_VERSION, "config": config_lib.resolved(config),
                    "records": records})
    self.metrics.append(metrics)  # after the checkpoint: a kill in between is repaired on resume
    self.state, self.variables, self.records = state, variables, records
    if config.progress:
      _log_round(self.tag, metrics)

  def close(self) -> None:
    self.ckpt.close()
    if self.done:
      workdir_lib.write_final_state(os.path.join(self.workdir, "final_state.npz"), self.state,
                                    self.run.splits.pool_source)


def _count_lines(path: str) -> int | None:
  try:
    with open(path, "rb") as f:
      return sum(1 for _ in f)
  except OSError:  # not Linux
    return None


def release_compiled_programs(fraction: float = 0.3) -> bool:
  """Drops JAX's compiled programs when this process holds more than ``fraction`` of the memory
  mappings Linux allows one process (``vm.max_map_count``, usually 65,530); returns whether it
  did. Every XLA:CPU executable keeps its own mappings (about three), and a process that compiles
  thousands of programs (many strategies or methods run one after another in one process) would
  reach the limit, where the next compile's mmap fails and XLA crashes with a segmentation
  fault. Programs still needed are compiled again. Only the main thread releases (runs in
  worker threads may be compiling)."""
  if threading.current_thread() is not threading.main_thread():
    return False
  count = _count_lines("/proc/self/maps")
  try:
    with open("/proc/sys/vm/max_map_count") as f:
      limit = int(f.read().strip())
  except (OSError, ValueError):
    limit = 65530
  if count is None or count <= fraction * limit:
    return False
  import gc

  jax.clear_caches()
  gc.collect()
  return True


def run_concurrently(tasks: Sequence[Callable[[], Any]], workers: int) -> list[Any]:
  """Runs ``tasks`` (no-argument callables), at most ``workers`` at a time in threads, and
  returns their results in order; the first task to raise stops the others from starting and
  its exception is raised here.

  Independent runs give the same results in threads as one after another (each is the same
  compiled computation on its own data); on XLA:CPU they finish sooner, because one
  computation's operations keep only part of the cores busy (Gal CNN training on 2 cores: 37 ms
  per step on both threads, 42 ms on one). The threads are daemons ("dal-worker-i") and the waiting
  here wakes twice a second, so Ctrl-C reaches the caller; the command-line tools then leave at
  once (``dal_jax.cli.guarded``; every round is checkpointed and the same command resumes
  exactly).
  """
  if workers <= 1 or len(tasks) <= 1:
    return [t() for t in tasks]
  results: list[Any] = [None] * len(tasks)
  errors: list[BaseException] = []
  pending = iter(enumerate(tasks))
  lock = threading.Lock()

  def worker():
    while not errors:
      with lock:
        nxt = next(pending, None)
      if nxt is None:
        return
      i, task = nxt
      try:
        results[i] = task()
      except BaseException as e:  # noqa: BLE001 - re-raised in the calling thread
        errors.append(e)

  threads = [threading.Thread(target=worker, daemon=True, name=f"dal-worker-{i}")
             for i in range(min(workers, len(tasks)))]
  for t in threads:
    t.start()
  for t in threads:
    while t.is_alive():
      t.join(0.5)
  if errors:
    raise errors[0]
  return results


def run_seeds(run: Run, seeds: list[int], workdir: str, *,
              max_rounds: int | None = None) -> dict[int, list[dict[str, Any]]]:
  """Runs (or resumes) seeds as one stack: each round, the live seeds at the lowest round go
  through one :func:`dal_jax.loop.al_round` (after a resume a seed behind the others first
  catches up on its own). One seed is a stack of one."""
  runs = [SeedRun(run, s, os.path.join(workdir, f"seed_{s}")) for s in seeds]
  members = run.config.ensemble_size
  try:
    rounds = 0
    while max_rounds is None or rounds < max_rounds:
      live = [r for r in runs if not r.done]
      if not live:
        break
      low = min(int(r.state.round) for r in live)
      batch = [r for r in live if int(r.state.round) == low]
      variables = (jax.tree.map(lambda *v: jnp.concatenate(v), *[r.variables for r in batch])
                   if run.config.warm_start else None)
      states, metrics, variables = loop_lib.al_round(
          [r.state for r in batch], method=run.method, learner=run.learner, data=run.data,
          oracle=run.oracle, config=run.round_config, variables=variables)
      for i, r in enumerate(batch):
        r.record(states[i], metrics[i],
                 jax.tree.map(lambda v, i=i: v[i * members:(i + 1) * members], variables))
      rounds += 1
  finally:
    for r in runs:
      r.close()
  return {r.seed: r.records for r in runs}


def check_workdir(config, workdir: str, seeds: list[int]) -> bool:
  """Refuses a workdir whose checkpoints hold another config (naming the fields); returns
  whether any checkpoint exists."""
  current = config_lib.resolved(config)
  found = False
  for s in seeds:
    directory = os.path.join(workdir, f"seed_{s}", "checkpoints")
    if not os.path.isdir(directory) or not os.listdir(directory):
      continue
    ckpt = workdir_lib.SeedCheckpoints(directory, keep=max(1, config.checkpoints_to_keep))
    try:
      meta = ckpt.meta()
    finally:
      ckpt.close()
    if meta is None:
      continue
    found = True
    if meta.get("schema") != config_lib.SCHEMA_VERSION:
      raise ValueError(f"{directory} was written with schema {meta.get('schema')} (this dal_jax "
                       f"writes {config_lib.SCHEMA_VERSION}); use a new --workdir")
    differ = config_lib.differences(meta["config"], current)
    if differ:
      raise ValueError(f"workdir {workdir!r} holds a run with another config ("
                       f"{', '.join(differ)}); use a new --workdir or the same config to resume")
  return found


def run_experiment(config, workdir: str, *, max_rounds: int | None = None,
                   splits: data_lib.Splits | None = None) -> dict[int, list[dict[str, Any]]]:
  """Runs all seeds of an experiment in ``workdir`` (resuming whatever is there).

  Returns:
    ``{seed: [per-round metrics]}``.
  """
  config_lib.check(config)
  build_method(config)  # option errors before anything is written
  parallel.maybe_initialize_distributed(config.distributed)
  lock = workdir_lib.WorkdirLock(workdir)
  try:
    seeds = [config.seed + i for i in range(config.num_seeds)]
    check_workdir(config, workdir, seeds)
    run = build(config, splits or load_splits(config), workdir=workdir)
    splits = None  # only the run's (a pool on disk is not held in memory)
    # For reading only (the checkpoints carry the config that counts): the latest invocation.
    if parallel.is_writer():
      with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump(config_lib.resolved(config), f, indent=2, sort_keys=True)
    groups = [seeds] if config.parallel_seeds else [[s] for s in seeds]
    results = {}
    for part in run_concurrently(
        [lambda g=g: run_seeds(run, g, workdir, max_rounds=max_rounds) for g in groups],
        config.workers):
      results.update(part)
    return results
  finally:
    lock.release()
    release_compiled_programs()
