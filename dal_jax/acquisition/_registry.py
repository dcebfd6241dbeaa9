"""The acquisition registry: one name -> a factory of uniform :class:`Acquisition` s.

An acquisition is a pair of pure functions plus what it needs from the model, in the optax style::

  acq = get_acquisition("bald", selector="power", beta=2.0)   # options bound here
  state = acq.init(key, spec)                                 # {} unless it learns to select
  indices, state = acq.select(state, outputs, key=key, k=10, where=~labeled)

``outputs`` maps ``"log_probs"`` ``[S, N, C]``, ``"pre_logits"`` ``[N, D]``, named outputs
(``"predicted_loss"`` ``[N]``), ``"x"`` (the candidates' inputs) and, for methods that need the
model itself, ``"model"`` and ``"variables"``; :class:`Needs` says which of them an acquisition
reads, so the loop computes only those. Three kinds register in one line each:

* a pure score ``fn(*arrays, where=None) -> [N]`` (:func:`register_score`), combined with a
  selector (``top_k`` or the stochastic ``power`` / ``softmax`` / ``softrank``);
* a batch method ``fn(*arrays, k, *, key, where, **options) -> [k]`` (:func:`register_batch`),
  every batch method taking its arrays in the order of :class:`Needs` then ``k``;
* anything else through :func:`register` with a factory ``make(**options) -> Acquisition``
  (acquisitions that train a network of their own; see ``dal_jax.methods``).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dal_jax.acquisition import _batchbald
from dal_jax.acquisition import _detection
from dal_jax.acquisition import _alfamix
from dal_jax.acquisition import _diversity
from dal_jax.acquisition import _fisher
from dal_jax.acquisition import _sparse_subset
from dal_jax.acquisition import _epig
from dal_jax.acquisition import _reduce
from dal_jax.acquisition import _regions
from dal_jax.acquisition import _scores
from dal_jax.acquisition import _selectors
from dal_jax.acquisition import _typical


class Needs(NamedTuple):
  """What an acquisition reads from the model and the pool.

  Attributes:
    log_probs: ``[S, N, C]`` log-probabilities (MC-dropout samples and ensemble members).
    pre_logits: ``[N, D]`` penultimate representations.
    outputs: names of other per-example outputs (``"predicted_loss"``).
    inputs: the candidates' inputs ``x``.
    model: the model and one model's variables (``"model"``, ``"variables"``, and ``"x"``).
    embeddings: ``[N, D]`` fixed embeddings of the candidates that do not depend on the task
      model (the pool's self-supervised embeddings, ``dal_jax.selfsup``).
  """

  log_probs: bool = False
  pre_logits: bool = False
  outputs: tuple[str, ...] = ()
  inputs: bool = False
  model: bool = False
  embeddings: bool = False

  @property
  def predictions(self) -> bool:
    """Whether the model must predict the candidates at all."""
    return self.log_probs or self.pre_logits or bool(self.outputs)

  def keys(self) -> tuple[str, ...]:
    """The ``outputs`` entries read, in the order they are passed to registered functions."""
    return ((("model", "variables") if self.model else ())
            + (("log_probs",) if self.log_probs else ())
            + (("pre_logits",) if self.pre_logits else ())
            + (("embeddings",) if self.embeddings else ()) + tuple(self.outputs)
            + (("x",) if self.inputs or self.model else ()))


class Acquisition(NamedTuple):
  """A configured acquisition (options bound).

  Attributes:
    name: registry name.
    init: ``init(key, spec: Spec) -> state``; ``{}`` for acquisitions without a network.
    select: ``select(state, outputs, *, key, k, where) -> (indices [k], state)``.
    needs: :class:`Needs`.
    item_score: for score acquisitions, ``item_score(outputs, where) -> [n]`` on any chunk of
      the candidates (an item's score depends on its own outputs alone); ``select`` then takes
      the candidates' scores as ``outputs["scores"]`` instead of the model outputs. A pool on
      disk is scored this way, chunk by chunk. None for batch methods.
    element_score: for registered scores and the random baselines,
      ``element_score(outputs, *, key, shape) -> [n, ...]`` the scores before any reduction (a
      segmentation model's pixels; ``shape`` is ``[n, ...]``, what random scores need without
      model outputs), which region queries reduce per window with ``element_reduction``
      (``(reduction, q)``); None for the others.
  """

  name: str
  init: Callable[..., Any]
  select: Callable[..., tuple[jax.Array, Any]]
  needs: Needs
  item_score: Callable[..., jax.Array] | None = None
  element_score: Callable[..., jax.Array] | None = None
  element_reduction: tuple[str, float] | None = None


class Registered(NamedTuple):
  """A registry entry: ``make(**options) -> Acquisition``; ``options``: name -> default."""

  make: Callable[..., Acquisition]
  options: dict[str, Any]
  needs: Needs
  doc: str = ""
  tasks: tuple[str, ...] | None = None  # the tasks it applies to (None: any)


ACQUISITIONS: dict[str, Registered] = {}

SELECTION_OPTIONS = {"selector": "top_k", "beta": 1.0}
# How a registered score's per-element values (a segmentation model's pixels) reduce to one per
# queried item (dal_jax.acquisition.reduce_scores); items scored whole ignore them.
REDUCTION_OPTIONS = {"reduction": "mean", "q": 0.1}

# Scores that are never negative, so power sampling (∝ score^beta) applies to them; other score
# acquisitions (margin, predicted losses, discriminator outputs, ...) need a rank- or
# softmax-based stochastic selector.
NONNEGATIVE_SCORES = frozenset({
    "random", "entropy", "least_confidence", "variation_ratios", "mean_std", "bald",
    "vote_entropy", "consensus_kl", "egl", "entropy_gradnorm", "ripu", "epig", "box_entropy",
    "box_margin", "localization_stability", "flip_consistency"})


def _no_state(key, spec):
  del key, spec
  return {}


def _first_line(fn) -> str:
  """The docstring's first paragraph, on one line (listings and the reference pages)."""
  return " ".join((inspect.getdoc(fn) or "").strip().split("\n\n")[0].split())


# Options that count or size something (or must be strictly positive, like a learning rate).
POSITIVE_OPTIONS = frozenset({
    "steps", "batch_size", "sub_batches", "latent_dim", "learning_rate", "max_iter", "width",
    "ratio", "num_samples", "chunk_size", "num_clusters", "max_exact_configs", "knn",
    "max_clusters", "clusters", "num_targets", "boxes", "levels"})


def _is_number(v) -> bool:
  return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool,
                                                                                     np.bool_))


def check_value(owner: str, option: str, value, default) -> None:
  """Checks one option against its default's type: booleans stay booleans, integers integers
  (``>= 1`` for sizes and counts, else ``>= 0``), numbers finite and ``>= 0`` (``> 0`` for a
  learning rate), sizes tuples of positive integers. Raises naming the option and what is
  allowed."""
  where = f"{owner}: option {option}"
  positive = option in POSITIVE_OPTIONS or option.split("_", 1)[-1] in POSITIVE_OPTIONS
  if default is None or isinstance(value, jax.core.Tracer):
    return
  if isinstance(default, bool):
    if not isinstance(value, (bool, np.bool_)):
      raise ValueError(f"{where} must be True or False, got {value!r}")
  elif isinstance(default, int):
    lo = 1 if positive else 0
    if not isinstance(value, (int, np.integer)) or isinstance(value, (bool, np.bool_)) or (
        value < lo):
      raise ValueError(f"{where} must be an integer >= {lo}, got {value!r}")
  elif isinstance(default, float):
    if not _is_number(value) or not np.isfinite(value) or value < 0 or (positive and value == 0):
      raise ValueError(f"{where} must be a finite number {'> 0' if positive else '>= 0'}, got "
                       f"{value!r}")
  elif isinstance(default, tuple):
    if not isinstance(value, (tuple, list)) or not all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1 for v in value):
      raise ValueError(f"{where} must be a sequence of positive integers (layer sizes), got "
                       f"{value!r}")
  elif isinstance(default, str) and not isinstance(value, str):
    raise ValueError(f"{where} must be a string, got {value!r}")


def check_options(name: str, given: Mapping[str, Any], valid: Mapping[str, Any]) -> dict:
  """``given`` over the defaults ``valid``; unknown names raise naming the valid ones, values
  are checked by :func:`check_value`."""
  bad = sorted(set(given) - set(valid))
  if bad:
    raise ValueError(f"{name} has no options {bad}; valid options: {sorted(valid) or 'none'}")
  for option, value in given.items():
    if option != "beta":  # the selector's temperature is checked with its selector
      check_value(name, option, value, valid[option])
  return {**valid, **given}


def register(name: str, make: Callable[..., Acquisition], *, needs: Needs,
             options: Mapping[str, Any] | None = None, doc: str = "",
             overwrite: bool = False, tasks: tuple[str, ...] | None = None) -> Registered:
  """Adds an acquisition factory to the registry.

  Args:
    name: registry name.
    make: ``make(**options) -> Acquisition``.
    needs: what it reads.
    options: its options with their defaults (listed by ``--help`` and checked by
      :func:`get_acquisition`).
    doc: one line for listings.
    overwrite: replace an existing entry.
    tasks: the tasks it applies to (:func:`check_task` refuses the others); None: any.
  """
  if name in ACQUISITIONS and not overwrite:
    raise ValueError(f"acquisition {name!r} is already registered (pass overwrite=True)")
  entry = Registered(make=make, options=dict(options or {}), needs=needs, doc=doc,
                     tasks=None if tasks is None else tuple(tasks))
  ACQUISITIONS[name] = entry
  return entry


def score_acquisition(name: str, score: Callable[..., jax.Array], needs: Needs, *,
                      selector: str = "top_k", beta: float = 1.0,
                      init: Callable[..., Any] = _no_state,
                      item_score: Callable[..., jax.Array] | None = None,
                      element_score: Callable[..., jax.Array] | None = None,
                      element_reduction: tuple[str, float] | None = None) -> Acquisition:
  """An :class:`Acquisition` from ``score(state, outputs, *, key, where) -> (scores [N], state)``
  and a selector. The key is split: the first half scores, the second selects. With
  ``item_score`` (see :class:`Acquisition`), precomputed ``outputs["scores"]`` are selected
  from directly."""
  select_fn = _selectors.get_selector(selector, beta)

  def select(state, outputs, *, key, k, where=None):
    score_key, select_key = jax.random.split(key)
    if item_score is not None and "scores" in outputs:
      scores = jnp.asarray(outputs["scores"])
    else:
      scores, state = score(state, outputs, key=score_key, where=where)
    if where is not None:  # -inf means "not a candidate": a candidate's score never is
      lowest = jnp.finfo(scores.dtype).min
      scores = jnp.where(where, jnp.maximum(scores, lowest), -jnp.inf)
    return select_fn(select_key, scores, k, beta=beta), state

  return Acquisition(name=name, init=init, select=select, needs=needs, item_score=item_score,
                     element_score=element_score, element_reduction=element_reduction)


def arguments(outputs: Mapping[str, Any], needs: Needs, name: str) -> list[Any]:
  missing = [r for r in needs.keys() if r not in outputs]
  if missing:
    raise ValueError(f"acquisition {name!r} needs {missing}; got {sorted(outputs)}")
  return [outputs[r] for r in needs.keys()]


def register_score(name: str, score_fn: Callable[..., jax.Array], *,
                   needs: Needs = Needs(log_probs=True), overwrite: bool = False,
                   tasks: tuple[str, ...] | None = None) -> Registered:
  """Registers a pure score ``score_fn(*arrays, where=None) -> [N]`` (higher = acquire), its
  arrays being those of ``needs`` in the order of :meth:`Needs.keys`. An item's score must depend
  on that item's arrays alone: pools on disk are scored chunk by chunk.

  Example::

    def max_prob_gap(log_probs, *, where=None): ...
    register_score("max_prob_gap", max_prob_gap)
  """

  def make(*, selector="top_k", beta=1.0, reduction="mean", q=0.1):
    if reduction not in _reduce.REDUCTIONS:
      raise ValueError(f"acquisition {name!r}: unknown reduction {reduction!r}; valid: "
                       f"{list(_reduce.REDUCTIONS)}")
    if not 0 < q <= 1:
      raise ValueError(f"acquisition {name!r}: q={q!r} must be in (0, 1]")

    def element_score(outputs, *, key=None, shape=None):
      del key, shape
      return score_fn(*arguments(outputs, needs, name))

    def item_score(outputs, where):
      scores = element_score(outputs)
      if scores.ndim > 1:
        # Per-element scores [N, ...] (a pixel each): reduced per item over the elements that
        # count (outputs["element_where"], e.g. the pixels nobody labeled yet).
        scores = _reduce.reduce_scores(scores, reduction=reduction, q=q,
                                       where=outputs.get("element_where"))
      return _scores.apply_where(scores, _scores.validate_where(where, scores.shape[0]))

    def score(state, outputs, *, key, where):
      del key
      return item_score(outputs, where), state

    return score_acquisition(name, score, needs, selector=selector, beta=beta,
                             item_score=item_score, element_score=element_score,
                             element_reduction=(reduction, q))

  return register(name, make, needs=needs,
                  options={**SELECTION_OPTIONS, **REDUCTION_OPTIONS},
                  doc=_first_line(score_fn), overwrite=overwrite, tasks=tasks)


def check_task(name: str, task: str) -> None:
  """Refuses, in one line, an acquisition registered for other tasks than ``task`` (those
  registered for classification apply to every task with one class per item)."""
  entry = ACQUISITIONS.get(name)
  if entry is None or entry.tasks is None or task in entry.tasks:
    return
  from dal_jax import tasks as tasks_lib

  if "classification" in entry.tasks and tasks_lib.get_task(task).label_shape((8, 8, 1)) == ():
    return  # another task with one class per item (its own loss or metrics)
  why = ("it reads one class distribution per item" if entry.tasks == ("classification",)
         else "it reads what such a model predicts")
  raise ValueError(f"acquisition {name!r} applies to the {' / '.join(entry.tasks)} task only "
                   f"({why}); config.task is {task!r}")


_MODEL = Needs(model=True)


def register_model_score(name: str, score_fn: Callable[..., jax.Array], *,
                         tasks: tuple[str, ...] | None = None, chunk: int = 256,
                         overwrite: bool = False) -> Registered:
  """Registers a score that runs the model itself: ``score_fn(model, variables, x, *, key,
  **options) -> [n]`` on chunks of ``chunk`` candidates (each item's score depends on its own
  input alone; ``key`` is the same for every chunk), its keyword options with defaults
  becoming the acquisition's options."""
  defaults = _keyword_defaults(score_fn)

  def make(*, selector="top_k", beta=1.0, **options):
    opts = check_options(name, options, defaults)

    def score(state, outputs, *, key, where):
      model, variables, x = arguments(outputs, _MODEL, name)
      parts = [score_fn(model, variables, jnp.asarray(x[s:s + chunk]), key=key, **opts)
               for s in range(0, x.shape[0], chunk)]
      scores = jnp.concatenate(parts)
      return _scores.apply_where(scores, _scores.validate_where(where, scores.shape[0])), state

    return score_acquisition(name, score, _MODEL, selector=selector, beta=beta)

  return register(name, make, needs=_MODEL, options={**SELECTION_OPTIONS, **defaults},
                  doc=_first_line(score_fn), overwrite=overwrite, tasks=tasks)


def _keyword_defaults(fn) -> dict[str, Any]:
  return {p.name: p.default for p in inspect.signature(fn).parameters.values()
          if p.kind == p.KEYWORD_ONLY and p.name not in ("key", "where")
          and p.default is not p.empty}


def batch_only(name: str, selector: str) -> None:
  """Batch methods choose their batch themselves: any selector but ``top_k`` is refused."""
  if selector != "top_k":
    raise ValueError(f"{name} chooses its batch itself; selector={selector!r} does not apply "
                     "(leave selector=top_k)")


def register_batch(name: str, fn: Callable[..., jax.Array], *, needs: Needs,
                   overwrite: bool = False, tasks: tuple[str, ...] | None = None) -> Registered:
  """Registers a batch method ``fn(*arrays, k, *, key, where, **options) -> [k]`` (arrays in
  the order of :meth:`Needs.keys`; a result record with an ``indices`` field, like
  BatchBALD's, is fine); its keyword options with defaults become its options."""
  defaults = _keyword_defaults(fn)

  def make(*, selector="top_k", beta=None, **options):
    batch_only(name, selector)
    if "beta" in defaults and beta is not None:  # the method's own beta (DMBAL's pre-filter)
      options["beta"] = beta
    opts = check_options(name, options, defaults)

    def select(state, outputs, *, key, k, where=None):
      out = fn(*arguments(outputs, needs, name), k, key=key, where=where, **opts)
      return getattr(out, "indices", out), state

    return Acquisition(name=name, init=_no_state, select=select, needs=needs)

  return register(name, make, needs=needs, options={**SELECTION_OPTIONS, **defaults},
                  doc=_first_line(fn), overwrite=overwrite, tasks=tasks)


def get_acquisition(name: str, **options) -> Acquisition:
  """A registered acquisition with its options bound; unknown names or options raise
  ``ValueError`` listing the valid ones."""
  if name not in ACQUISITIONS:
    raise ValueError(f"unknown acquisition {name!r}; valid acquisitions: {sorted(ACQUISITIONS)}")
  entry = ACQUISITIONS[name]
  check_options(name, options, entry.options)
  return entry.make(**options)


def acquire(acquisition: Acquisition | str, outputs: Mapping[str, Any], *, key: jax.Array,
            k: int, where: jax.Array | None = None, state: Any = None,
            **options) -> jax.Array:
  """Quick use: selects ``k`` distinct candidate indices.

  Args:
    acquisition: an :class:`Acquisition` or a registered name (then ``options`` are bound).
    outputs: what the acquisition needs (``log_probs``, ``pre_logits``, ...).
    key: PRNG key.
    k: batch size.
    where: ``[N]`` candidate mask (``~labeled``).
    state: the state of an acquisition that learns to select (``acq.init(key, spec)``).

  Returns:
    ``[k]`` int32 indices into the candidates.
  """
  acq = get_acquisition(acquisition, **options) if isinstance(acquisition, str) else acquisition
  if state is None:
    state = acq.init(key, None)
  indices, _ = checked_select(acq, state, outputs, key=key, k=k, where=where)
  return indices


def checked_select(acq: Acquisition, state, outputs, *, key, k: int, where=None):
  """``acq.select`` followed by a check of its contract: exactly ``k`` distinct indices in
  range, none outside ``where``. A broken contract raises naming the acquisition."""
  k = _scores.count(k)
  indices, state = acq.select(state, outputs, key=key, k=k, where=where)
  if isinstance(indices, jax.core.Tracer) or isinstance(where, jax.core.Tracer):
    return indices, state  # under jit: checked by shape only (-1 marks unfillable slots)
  idx = np.asarray(indices)
  n = None if where is None else int(np.shape(where)[0])
  bad = (idx.shape != (k,) or len(set(idx.tolist())) != k or (idx < 0).any()
         or (n is not None and ((idx >= n).any() or not np.asarray(where)[idx].all())))
  if bad:
    raise ValueError(f"acquisition {acq.name!r} broke its contract: it must return {k} distinct "
                     f"candidate indices outside the labeled set, got {idx.tolist()[:20]}")
  return indices, state


# ---- scores ----

for _name, _fn in [
    ("entropy", _scores.predictive_entropy),
    ("least_confidence", _scores.least_confidence),
    ("margin", _scores.margin),
    ("variation_ratios", _scores.variation_ratios),
    ("mean_std", _scores.mean_std),
    ("bald", _scores.bald),
    ("vote_entropy", _scores.vote_entropy),
    ("consensus_kl", _scores.consensus_kl),
    ("ripu", _regions.ripu),
]:
  register_score(_name, _fn)
register_score("box_entropy", _detection.box_entropy, tasks=("detection",))
register_score("box_margin", _detection.box_margin, tasks=("detection",))
register_model_score("localization_stability", _detection.localization_stability,
                     tasks=("detection",))
register_model_score("flip_consistency", _detection.flip_consistency, tasks=("detection",))


def _random(state, outputs, *, key, where):
  del outputs
  if where is None:
    raise ValueError("random acquisition needs `where` (the candidate mask) to know the pool size")
  return _scores.random_scores(key, where.shape[0], where=where), state


def _random_elements(outputs, *, key, shape):
  """Region queries: iid uniform pixel scores; their per-window maximum ranks equal windows
  in a uniformly random order (random regions)."""
  del outputs
  return jax.random.uniform(key, tuple(shape))


# Random sampling needs no model output: the loop skips pool inference for it.
register("random", lambda *, selector="top_k", beta=1.0: score_acquisition(
    "random", _random, Needs(), selector=selector, beta=beta, element_score=_random_elements,
    element_reduction=("max", 0.1)), needs=Needs(),
         options=SELECTION_OPTIONS, doc="uniform random baseline (random items or regions)")


def _foreground_random(*, selector="top_k", beta=1.0, background=0):
  name = "foreground_random"
  if selector != "top_k":  # (so config.selector=auto leaves it top_k)
    raise ValueError(f"{name} is random already; selector={selector!r} does not apply (leave "
                     "selector=top_k)")

  def element_score(outputs, *, key, shape=None):
    del shape
    return _scores.foreground_random_scores(key, arguments(outputs, _LOG_PROBS, name)[0],
                                            background=background)

  def score(state, outputs, *, key, where):
    pixels = element_score(outputs, key=key)
    items = (pixels if pixels.ndim == 1 else
             _reduce.reduce_scores(pixels, reduction="max", where=outputs.get("element_where")))
    return _scores.apply_where(items, _scores.validate_where(where, items.shape[0])), state

  return score_acquisition(name, score, _LOG_PROBS, selector=selector, beta=beta,
                           element_score=element_score, element_reduction=("max", 0.1))


_LOG_PROBS = Needs(log_probs=True)


def _epig_acquisition(*, selector="top_k", beta=1.0, num_targets=100):
  if isinstance(num_targets, bool) or not isinstance(num_targets, int) or num_targets < 1:
    raise ValueError(f"acquisition 'epig': num_targets={num_targets!r} must be an integer >= 1")

  def score(state, outputs, *, key, where):
    log_probs = jnp.asarray(arguments(outputs, _LOG_PROBS, "epig")[0])
    if log_probs.ndim != 3:
      raise ValueError(f"epig scores whole items from [S, N, C] log-probs; got shape "
                       f"{log_probs.shape} (per-pixel predictions have no EPIG here)")
    n = log_probs.shape[1]
    weights = jnp.ones(n) if where is None else jnp.asarray(where, jnp.float32)
    # Target inputs x* ~ the candidates (the pool as the target distribution), with replacement:
    # an unbiased sample of E_{x*} of a fixed size.
    targets = jax.random.choice(key, n, (num_targets,), p=weights / jnp.sum(weights))
    return _epig.epig(log_probs, log_probs[:, targets], where=where), state

  return score_acquisition("epig", score, _LOG_PROBS, selector=selector, beta=beta)


register("epig", _epig_acquisition, needs=_LOG_PROBS, tasks=("classification",),
         options={**SELECTION_OPTIONS, "num_targets": 100},
         doc="expected predictive information gain about the predictions on num_targets "
             "target inputs drawn from the pool (Bickford Smith et al. 2023)")
register("foreground_random", _foreground_random, needs=_LOG_PROBS,
         options={**SELECTION_OPTIONS, "background": 0},
         doc="random among the items (or regions) the model predicts foreground in, first "
             "(nnActive's foreground-aware random, Lüth et al. 2025)")

# ---- batch-aware acquisitions (return indices) and gradient-length scores ----

_EMB = Needs(log_probs=True, pre_logits=True)
# Acquisitions that read one class distribution per item ([S, N, C]): classification only (a
# mask's or a detector's per-element predictions would be refused later, after a round of
# training; config.check refuses them before any work).
_ITEMS = ("classification",)
register_batch("batchbald", _batchbald.batchbald, needs=Needs(log_probs=True), tasks=_ITEMS)
register_batch("badge", _diversity.badge, needs=_EMB, tasks=_ITEMS)
register_batch("coreset", _diversity.coreset, needs=Needs(pre_logits=True))
register_batch("kmeans", _diversity.kmeans_select, needs=Needs(pre_logits=True))
register_batch("dmbal", _diversity.dmbal, needs=_EMB, tasks=_ITEMS)
register_batch("cluster_margin", _diversity.cluster_margin, needs=_EMB, tasks=_ITEMS)
register_batch("dropquery", _diversity.dropquery, needs=_EMB, tasks=_ITEMS)
register_batch("bait", _fisher.bait, needs=_EMB, tasks=_ITEMS)
register_batch("acs_fw", _sparse_subset.acs_fw, needs=Needs(log_probs=True), tasks=_ITEMS)
register_batch("alfa_mix", _alfamix.alfa_mix, needs=_EMB, tasks=_ITEMS)
register_batch("umr", _diversity.uncertainty_minus_redundancy, needs=_EMB, tasks=_ITEMS)
register_batch("kdpp", _diversity.kdpp, needs=_EMB, tasks=_ITEMS)
register_score("egl", _diversity.expected_gradient_length, needs=_EMB, tasks=_ITEMS)
# Low-budget selection on the pool's self-supervised embeddings (no task-model output).
register_batch("typiclust", _typical.typiclust, needs=Needs(embeddings=True))
register_batch("probcover", _typical.probcover, needs=Needs(embeddings=True))
register_batch("maxherding", _typical.maxherding, needs=Needs(embeddings=True))
register_score("entropy_gradnorm", _diversity.entropy_gradnorm, needs=_EMB, tasks=_ITEMS)
