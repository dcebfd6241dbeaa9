"""Experiment configuration: every field with its default, meaning and allowed range, in one place.

``default_config()`` is the ml_collections ConfigDict every experiment config starts from
(``experiments/configs/*.py`` override a few fields); ``--config.<field>=<value>`` overrides any
field from the command line; :func:`check` validates every field before any work starts, with
one line naming the field and what is allowed; :func:`describe` is the ``--help`` text.

Options of methods and models are nested under their names and only the chosen one's are read:
``--config.methods.dal.steps=100``, ``--config.models.gal_cnn.filters=16``. Their defaults come
from the methods and models themselves (``dal_jax.methods``, ``dal_jax.models``).
"""

from __future__ import annotations

import functools
import json
from typing import Any, Callable, NamedTuple

import ml_collections

from dal_jax import acquisition as acq_lib
from dal_jax import loop as loop_lib
from dal_jax import methods as methods_lib
from dal_jax import models as models_lib
from dal_jax import tasks as tasks_lib
from dal_jax import training

# Bumped whenever stored runs of an older layout cannot be resumed as they are.
SCHEMA_VERSION = 2


class Field(NamedTuple):
  default: Any
  doc: str
  check: Callable[[Any], bool] | None = None
  allowed: str = ""


def _int_at_least(lo):
  def ok(v):
    return isinstance(v, int) and not isinstance(v, bool) and v >= lo
  return ok, f"an integer >= {lo}"


def _float_in(lo, hi, *, lo_open=False):
  def ok(v):
    return (isinstance(v, (int, float)) and not isinstance(v, bool) and v == v
            and (v > lo if lo_open else v >= lo) and v <= hi)
  return ok, f"a number in {'(' if lo_open else '['}{lo}, {hi}]"


def _optional(check_allowed):
  check, allowed = check_allowed
  return (lambda v: v is None or check(v)), f"None or {allowed}"


def _one_of(values):
  return (lambda v: v in values), " or ".join(repr(v) for v in values)


_BOOL = ((lambda v: isinstance(v, bool)), "True or False")
_STR = ((lambda v: isinstance(v, str) and v != ""), "a non-empty string")


# One source of defaults: the library's records hold them, the config fields read them.
_TRAIN = training.TrainConfig()
_ROUND = loop_lib.RoundConfig(query_size=20)


def _f(default, doc, check_allowed=None):
  check, allowed = check_allowed if check_allowed else (None, "")
  return Field(default, doc, check, allowed)


INF = float("inf")

FIELDS: dict[str, Field] = {
    # Data.
    "dataset": _f("fashion_mnist", "fashion_mnist, digits (scikit-learn's 8x8 digits), "
                  "idx:<dir> (MNIST-format IDX files), scenes[:size=64,train=5000,test=1000,"
                  "seed=0,labels=masks|boxes,source=<IDX dir>] (Fashion-MNIST scenes for "
                  "segmentation or detection), masks:<dir> (images with PNG masks), coco:<dir> "
                  "(images with a COCO JSON of boxes), or a tfds dataset prepared in data_dir",
                  _STR),
    "data_dir": _f(None, "tfds data directory (None: ~/tensorflow_datasets)"),
    "split_seed": _f(0, "seed of the pool / validation / test split", _int_at_least(0)),
    "val_size": _f(1000, "labeled validation points for early stopping (0: none)",
                   _int_at_least(0)),
    "pool_size": _f(None, "pool points (None: all remaining)", _optional(_int_at_least(1))),
    "test_size": _f(None, "test points (None: the whole test split; 0: no test set)",
                    _optional(_int_at_least(0))),
    "imbalance_ratio": _f(1.0, "long-tailed pool: most/least frequent class ratio (1: as is)",
                          _float_in(1.0, INF)),
    "ood_fraction": _f(0.0, "out-of-distribution samples appended to the pool (labels -1)",
                       _float_in(0.0, 0.9)),
    # Task and model.
    "task": _f("classification", "what a label is, its loss and metrics: classification, "
               "segmentation, detection, or a task registered from user code "
               "(dal_jax.tasks.register_task, loaded with --import)", _STR),
    "model": _f("gal_cnn", "mlp, gal_cnn, resnet18, unet (segmentation), centernet "
                "(detection), or one registered with dal_jax.models.register_model; its "
                "options are models.<model>.<option>", _STR),
    # Acquisition / method.
    "acquisition": _f("bald", "the method: any acquisition or method name", _STR),
    "selector": _f("auto", "how score acquisitions pick k points: power (stochastic batch "
                   "acquisition, Kirsch et al. 2023: k draws without replacement, probability "
                   "∝ score^beta), softmax, softrank, or top_k (the k highest scores); auto: "
                   "power for non-negative scores (BALD, entropy, ...), softrank for other "
                   "scores (margin, ...), the batch method's own choice otherwise",
                   _STR),
    "beta": _f(1.0, "temperature of the stochastic selectors", _float_in(0.0, INF)),
    "add_methods": _f("", "comma-separated training-only methods added to the acquisition: "
                      "mixup, fixmatch, ceal"),
    "embeddings": _f("", "embeddings of the pool for typiclust / probcover: '' (none), simclr "
                     "(self-supervised, learned on the pool, cached per pool) or pca (64 "
                     "principal components of the pixels)", _one_of(("", "simclr", "pca"))),
    "selfsup_steps": _f(600, "SimCLR steps (batches of 128 pairs) when embeddings or "
                        "selfsup_init ask for it", _int_at_least(1)),
    "selfsup_init": _f(False, "the task model starts every round from the SimCLR encoder "
                       "(classifier fresh)", _BOOL),
    "mc_samples": _f(_ROUND.mc_samples,
        "MC-dropout samples for acquisitions that read log-probs (0: "
        "deterministic)", _int_at_least(0)),
    "pool_subsample": _f(_ROUND.pool_subsample,
        "score this many random unlabeled candidates per round (0: all)",
        _int_at_least(0)),
    "chunk_size": _f(1024, "pool points per compiled prediction call", _int_at_least(1)),
    "region_size": _f(_ROUND.region_size,
        "0: whole items are queried; r > 0 (segmentation): r x r windows of "
        "the images, query_size windows per round, the budget and num_labels "
        "counting labeled pixels in images' worth", _int_at_least(0)),
    "region_shape": _f(_ROUND.region_shape,
        "with region_size > 0: 'window' (r x r squares, neighbours "
        "of a chosen one passed over) or 'superpixel' (SLIC superpixels of about "
        "r x r pixels; Cai et al. 2021)", _one_of(("window", "superpixel"))),
    "pool_on_disk": _f(False, "keep the pool in an array_record file in the workdir, not in "
                       "memory: rounds train on the labeled items read by index and score the "
                       "pool chunk by chunk (with several processes, each reads only its "
                       "devices' rows)", _BOOL),
    # Protocol and stopping.
    "initial_size": _f(20, "initial labeled points", _int_at_least(1)),
    "initial_balanced": _f(True, "class-balanced initial set (Gal et al. 2017; simulation only; "
                           "random cold start only)", _BOOL),
    "cold_start": _f("random", "how the initial set is chosen before any label: random (see "
                     "initial_balanced), or kmeans / coreset / typiclust / probcover on the "
                     "pool's embeddings (config.embeddings, else the flattened inputs) among "
                     "pool_subsample random points", _one_of(loop_lib.COLD_STARTS)),
    "query_size": _f(20, "k, points labeled per round", _int_at_least(1)),
    "budget": _f(_ROUND.budget, "stop once this many points are labeled", _int_at_least(1)),
    "target_accuracy": _f(_ROUND.target_accuracy,
        "stop once test accuracy reaches this (None: never)",
        _optional(_float_in(0.0, 1.0))),
    "warm_start": _f(_ROUND.warm_start,
        "continue from last round's weights instead of re-initialising",
        _BOOL),
    "stabilizing_stop_set": _f(0, "stabilizing predictions (Bloodgood & Vijay-Shanker 2009): "
                               "stop-set size (0: off)", _int_at_least(0)),
    "stabilizing_window": _f(3, "kappas averaged by the stabilizing rule", _int_at_least(1)),
    "stabilizing_threshold": _f(0.99, "mean kappa at which predictions count as stable",
                                _float_in(-1.0, 1.0)),
    "stop_on_stabilizing": _f(False, "stop the run when predictions stabilize (else record "
                              "only)", _BOOL),
    # Stacks and devices.
    "ensemble_size": _f(_ROUND.ensemble_size,
        "E models per seed: a deep ensemble (DEBAL with mc_samples > 0)",
        _int_at_least(1)),
    "num_devices": _f(0, "devices to shard over (0: all visible)", _int_at_least(0)),
    "distributed": _f(False, "jax.distributed.initialize() first (multi-host)", _BOOL),
    "parallel_seeds": _f(False, "run the seeds as one stacked program per round (same "
                         "results)", _BOOL),
    "workers": _f(1, "runs trained at the same time in threads: the strategies of a comparison "
                  "(else the seeds of a run); the same results, sooner on a CPU whose cores "
                  "one run leaves partly idle", _int_at_least(1)),
    # Run.
    "seed": _f(0, "first seed", _int_at_least(0)),
    "num_seeds": _f(3, "seeds seed, seed+1, ...", _int_at_least(1)),
    "checkpoints_to_keep": _f(2, "orbax checkpoints kept per seed", _int_at_least(1)),
    "progress": _f(True, "print one line per round and seed", _BOOL),
    "report_accuracy": _f(0.70, "accuracy whose label cost comparisons report",
                          _float_in(0.0, 1.0)),
    "report_counting": _f("labels", "labels to report_accuracy counted as all labels or as "
                          "acquired labels (initial set excluded)",
                          _one_of(("labels", "acquired"))),
    "protocol": _f("", "name and source of the published protocol a config follows (titles of "
                   "reports)"),
}

TRAIN_FIELDS: dict[str, Field] = {
    "batch_size": _f(_TRAIN.batch_size, "labeled examples per step", _int_at_least(1)),
    "learning_rate": _f(_TRAIN.learning_rate,
        "AdamW learning rate", _float_in(0.0, 10.0, lo_open=True)),
    "weight_decay": _f(_TRAIN.weight_decay, "weight-decay coefficient λ (see train.decay, "
                       "train.weight_decay_scale)", _float_in(0.0, 1e4)),
    "decay": _f(_TRAIN.decay, "decoupled (AdamW) or l2 (penalty λ'/2·||w||² in the loss, as "
                "Gal et al. 2017)", _one_of(training.DECAYS)),
    "weight_decay_scale": _f(_TRAIN.weight_decay_scale,
        "constant (λ' = λ) or inverse_n (λ' = λ / labeled "
        "points, Gal et al. 2017)", _one_of(training.DECAY_SCALES)),
    "max_steps": _f(_TRAIN.max_steps, "upper bound on steps per round", _int_at_least(1)),
    "eval_every": _f(_TRAIN.eval_every, "steps between validation evaluations", _int_at_least(1)),
    "patience": _f(_TRAIN.patience,
        "evaluations without improvement before stopping", _int_at_least(1)),
    "early_stopping": _f(_TRAIN.early_stopping,
        "validation criterion, one of the task's: accuracy or nll "
        "(segmentation: miou, accuracy, nll; detection: loss); none: no early stopping, every "
        "round trains exactly max(min_steps, min_epochs passes) steps", _STR),
    "decay_params": _f(_TRAIN.decay_params, "parameters that decay: all, or dense_kernels (the "
                       "dense layers' kernels, Gal et al. 2017)", _one_of(training.DECAY_PARAMS)),
    "min_steps": _f(_TRAIN.min_steps, "steps before early stopping may stop", _int_at_least(0)),
    "min_epochs": _f(_TRAIN.min_epochs,
        "passes over the labeled set before early stopping may stop (the "
        "minimum grows with the labeled set)", _float_in(0.0, 1e4)),
}

# Values of train fields added after runs were first stored that reproduce those runs (a stored
# run without the field ran this way).
# Top-level fields added after runs were first stored, at the values those runs ran with.
LEGACY_FIELDS = {"embeddings": "", "selfsup_steps": 600, "selfsup_init": False,
                 "report_counting": "labels", "protocol": "", "cold_start": "random",
                 "workers": 1, "pool_on_disk": False, "task": "classification",
                 "region_size": 0, "region_shape": "window"}

LEGACY_TRAIN = {"decay": "decoupled", "weight_decay_scale": "constant",
                "early_stopping": "accuracy", "min_steps": 0, "min_epochs": 0.0,
                "decay_params": "all"}

# Fields that may change between a run and its resumption without changing its results (a
# seed's run depends on its own number only, so seeds may be added to a finished workdir).
RESUMABLE_FIELDS = ("progress", "num_devices", "distributed", "checkpoints_to_keep",
                    "report_accuracy", "report_counting", "protocol", "seed", "num_seeds",
                    "workers")


def model_options(name: str) -> dict[str, Any]:
  """A registered model's options with their defaults (:func:`dal_jax.models.register_model`)."""
  return models_lib.model_options(name)


def _own_options(name: str) -> dict[str, Any]:
  """A method's options other than the selection ones (those are top-level fields)."""
  return {k: v for k, v in methods_lib.method_options(name).items()
          if k not in acq_lib.SELECTION_OPTIONS}


def default_config() -> ml_collections.ConfigDict:
  """Every field at its default (the registered methods' and models' options included)."""
  c = ml_collections.ConfigDict({k: f.default for k, f in FIELDS.items()})
  c.data_dir = ml_collections.config_dict.placeholder(str)
  c.pool_size = ml_collections.config_dict.placeholder(int)
  c.test_size = ml_collections.config_dict.placeholder(int)
  c.target_accuracy = ml_collections.config_dict.placeholder(float)
  c.train = ml_collections.ConfigDict({k: f.default for k, f in TRAIN_FIELDS.items()})
  c.models = ml_collections.ConfigDict({name: model_options(name) for name in models_lib.MODELS})
  c.methods = ml_collections.ConfigDict(
      {name: _own_options(name) for name in methods_lib.names() if _own_options(name)})
  return c


def plain(value):
  if hasattr(value, "to_dict"):
    value = value.to_dict()
  if isinstance(value, dict):
    return {k: plain(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(plain(v) for v in value)
  return value


def add_method_names(config) -> list[str]:
  return [m.strip() for m in (config.add_methods or "").split(",") if m.strip()]


def method_kwargs(config, name: str) -> dict[str, Any]:
  """The options a run passes to ``get_method(name, ...)``."""
  section = config.methods.get(name) if "methods" in config else None
  opts = plain(section) if section is not None else {}
  if name == config.acquisition and "selector" in methods_lib.method_options(name):
    opts = {**opts, "selector": resolved_selector(config.selector, name), "beta": config.beta}
  return opts


def resolved_selector(selector: str, name: str) -> str:
  """``auto`` -> ``power`` for non-negative scores (``acquisition.NONNEGATIVE_SCORES``),
  ``softrank`` for other score acquisitions, ``top_k`` for batch methods (which choose their
  batch themselves); any other selector as given."""
  if selector != "auto":
    return selector
  if not _takes_stochastic_selector(name):
    return "top_k"
  return "power" if name in acq_lib.NONNEGATIVE_SCORES else "softrank"


@functools.lru_cache(maxsize=None)
def _takes_stochastic_selector(name: str) -> bool:
  try:
    methods_lib.get_method(name, selector="power")
  except ValueError:
    return False
  return True


def _check_field(path: str, field: Field, value) -> None:
  if field.check is not None and not field.check(value):
    raise ValueError(f"config.{path}={value!r} is not allowed: expected {field.allowed}")


def check(config) -> None:
  """Validates every field; raises ``ValueError`` naming the first bad one."""
  known = set(FIELDS) | {"train", "models", "methods"}
  unknown = sorted(set(config.keys()) - known)
  if unknown:
    raise ValueError(f"unknown config fields {unknown}; see --help for the valid ones")
  for name, field in FIELDS.items():
    if name not in config:
      raise ValueError(f"config.{name} is missing (start configs from "
                       "dal_jax.config.default_config())")
    _check_field(name, field, config[name])
  unknown = sorted(set(config.train.keys()) - set(TRAIN_FIELDS))
  if unknown:
    raise ValueError(f"unknown config.train fields {unknown}; valid: {sorted(TRAIN_FIELDS)}")
  for name, field in TRAIN_FIELDS.items():
    _check_field(f"train.{name}", field, config.train[name])
  task = tasks_lib.get_task(config.task)
  if config.train.early_stopping != training.NO_EARLY_STOPPING:
    task.criterion(config.train.early_stopping)
  if config.model not in models_lib.MODELS:
    raise ValueError(f"unknown model {config.model!r}; valid models: {sorted(models_lib.MODELS)}")
  options = plain(config.models.get(config.model, {})) if "models" in config else {}
  if not isinstance(options, dict):
    raise ValueError(f"config.models.{config.model} must hold the model's options")
  unknown = sorted(set(options) - set(model_options(config.model)))
  if unknown:
    raise ValueError(f"model {config.model!r} has no options {unknown}; valid: "
                     f"{sorted(model_options(config.model))}")
  models_lib.check_options(config.model, {k: tuple(v) if isinstance(v, list) else v
                                          for k, v in options.items()})
  acq_lib.get_selector(resolved_selector(config.selector, config.acquisition)
                       if config.acquisition in methods_lib.names() else "top_k", config.beta)
  if config.region_size and not tasks_lib.get_task(config.task).regions:
    raise ValueError(f"config.region_size={config.region_size} queries windows of [H, W] masks; "
                     f"task {config.task!r} has no such labels (use task=segmentation, or "
                     "region_size=0)")
  if config.region_shape != "window" and not config.region_size:
    raise ValueError(f"config.region_shape={config.region_shape!r} shapes region queries: set "
                     "config.region_size (about r x r pixels per region) too")
  if 0 < config.pool_subsample < config.query_size and not config.region_size:  # (windows)
    raise ValueError(f"config.pool_subsample={config.pool_subsample} must be 0 (score the whole "
                     f"pool) or at least config.query_size={config.query_size}")
  if config.budget < config.initial_size:
    raise ValueError(f"config.budget={config.budget} is smaller than config.initial_size="
                     f"{config.initial_size}")
  acq_lib.check_task(config.acquisition, config.task)
  entry = acq_lib.ACQUISITIONS.get(config.acquisition)
  if entry is not None and entry.needs.embeddings and not config.embeddings:
    raise ValueError(f"acquisition {config.acquisition!r} selects on embeddings of the pool: "
                     "set config.embeddings='simclr' (or 'pca')")
  for name in [config.acquisition, *add_method_names(config)]:
    if name not in methods_lib.names():
      raise ValueError(f"unknown method {name!r} in config."
                       f"{'acquisition' if name == config.acquisition else 'add_methods'}; "
                       f"valid: {methods_lib.names()}")


def resolved(config) -> dict[str, Any]:
  """The config as stored with a run's checkpoints: plain JSON, with only the chosen model's
  and methods' option sections (changing another method's options does not change the run)."""
  d = json.loads(config.to_json_best_effort(sort_keys=True))
  d["models"] = {config.model: d.get("models", {}).get(config.model, {})}
  used = [config.acquisition, *add_method_names(config)]
  d["methods"] = {k: v for k, v in d.get("methods", {}).items() if k in used}
  return d


def _with_new_defaults(stored: dict[str, Any]) -> dict[str, Any]:
  """A stored config with the fields, train fields, model options and method options added
  since it was written, at the values the run had (a run made before an option existed ran as
  its default)."""
  stored = {**LEGACY_FIELDS, **stored}
  train = stored.get("train")
  if isinstance(train, dict):
    stored = {**stored, "train": {**LEGACY_TRAIN, **train}}
  listed = lambda d: {k: list(v) if isinstance(v, tuple) else v  # noqa: E731
                      for k, v in d.items()}
  methods = stored.get("methods")
  if isinstance(methods, dict):  # method options added since (the score reductions) likewise
    known = set(methods_lib.names())
    used = [stored.get("acquisition"), *(m.strip() for m in
                                         str(stored.get("add_methods") or "").split(","))]
    names = set(methods) | {m for m in used if m in known and _own_options(m)}
    stored = {**stored, "methods": {
        name: {**listed(_own_options(name) if name in known else {}),
               **(methods.get(name) or {})} for name in sorted(names)}}
  models = stored.get("models")
  if not isinstance(models, dict):
    return stored
  filled = {}
  for name, opts in models.items():
    defaults = model_options(name) if name in models_lib.MODELS else {}
    filled[name] = {**listed(defaults), **(opts or {})}
  return {**stored, "models": filled}


def differences(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
  """``"field: old -> new"`` for the fields that differ (resumable fields ignored; model options
  added after the stored run count at their defaults, train fields at :data:`LEGACY_TRAIN`)."""
  return _differences(_with_new_defaults(stored), current)


def _differences(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
  out = []
  for k in sorted(set(stored) | set(current)):
    if k in RESUMABLE_FIELDS or stored.get(k) == current.get(k):
      continue
    a, b = stored.get(k), current.get(k)
    if isinstance(a, dict) and isinstance(b, dict):
      out += [f"{k}.{d}" for d in _differences(a, b)]
    else:
      out.append(f"{k}: {a!r} -> {b!r}")
  return out


def with_overrides(config, items, *, context: str = "overrides"):
  """A copy of ``config`` with ``field=value`` items applied (nested fields as
  ``section.field``, e.g. ``methods.waal.alpha=0.01``); values take the type of the field."""
  cfg = config.copy_and_resolve_references()
  for item in items:
    field, sep, value = item.partition("=")
    *parents, leaf = field.split(".")
    node = cfg
    for p in parents:
      node = node[p] if p in node and hasattr(node[p], "keys") else None
      if node is None:
        break
    if not sep or node is None or leaf not in node:
      raise ValueError(f"bad override {item!r} in {context}: expected field=value with "
                       f"a config field (one of {sorted(cfg.keys())}, or section.field)")
    current = node[leaf]
    if isinstance(current, bool):
      if value.lower() not in ("1", "true", "yes", "0", "false", "no"):
        raise ValueError(f"bad override {item!r} in {context}: {leaf} is True or False")
      node[leaf] = value.lower() in ("1", "true", "yes")
    elif current is None:
      node[leaf] = value
    else:
      try:
        node[leaf] = type(current)(value)
      except ValueError:
        raise ValueError(f"bad override {item!r} in {context}: {leaf} takes a "
                         f"{type(current).__name__}") from None
  return cfg


def describe() -> str:
  """Every field with its default and meaning (the ``--help`` text of ``--config``)."""
  lines = ["Config fields (override with --config.<field>=<value>):"]
  for name, f in FIELDS.items():
    lines.append(f"  {name} = {f.default!r}: {f.doc}")
  for name, f in TRAIN_FIELDS.items():
    lines.append(f"  train.{name} = {f.default!r}: {f.doc}")
  for name in models_lib.MODELS:
    opts = ", ".join(f"{k}={v!r}" for k, v in model_options(name).items())
    lines.append(f"  models.{name}.<option>: {opts}")
  lines.append("  methods.<name>.<option>: options of the acquisition / methods in use:")
  for name in methods_lib.names():
    opts = methods_lib.method_options(name)
    doc = (methods_lib.METHODS[name].doc if name in methods_lib.METHODS
           else acq_lib.ACQUISITIONS[name].doc)
    shown = ", ".join(f"{k}={v!r}" for k, v in opts.items() if k not in ("selector", "beta"))
    lines.append(f"    {name}: {doc}" + (f" [{shown}]" if shown else ""))
  return "\n".join(lines)
