"""The active learning loop: immutable state, one round as a fixed pipeline split at the oracle.

One round (Ren et al. 2021, Fig. 1)::

  propose:      train f on L -> [hooks] -> evaluate (when a test set is given) -> stop?
                -> score U -> select k                                   ... -> Query
  (the oracle:  a simulation answering from ground truth, or a human annotator)
  incorporate:  L ∪= B with the answers -> [hooks]

The pipeline names no method: what a method adds runs through its loss terms (inside training)
and its round hooks. It works on a stack of seeds (``states``, G >= 1) each trained as an
ensemble of E >= 1 models: the learner sees M = G·E models, model ``g·E + e`` being member e of
seed g. All randomness of round r comes from ``fold_in(state.key, r)``, so a run resumed from the
state saved after round r makes exactly the choices an uninterrupted run makes, and seeds run in
parallel make exactly the choices they make alone.
"""

from __future__ import annotations

import time
from typing import Any, Callable, NamedTuple, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from dal_jax import acquisition as acq_lib
from dal_jax import learner as learner_lib
from dal_jax import streaming
from dal_jax.data import OOD_LABEL
from dal_jax.methods import Method
from dal_jax.methods import Setup

UNKNOWN = -2  # label of a pool point nobody has asked the oracle about


class LoopState(flax.struct.PyTreeNode):
  """Everything the loop knows about one run, as one pytree (N = pool size).

  Attributes:
    labeled: ``[N]`` bool, points the oracle has labeled (budget spent on them).
    labels: ``[N, ...]`` int32 labels known so far, of the task's label shape (a class ``[N]``;
      a mask ``[N, H, W]``): ``UNKNOWN`` (-2) where unlabeled, ``OOD_LABEL`` (-1) for labeled
      out-of-distribution points and for the pixels of a mask nobody labeled (neither is
      trained on). Which items are labeled is ``labeled``, not the label values.
    acquired_round: ``[N]`` int32 round whose selection added the point (``0`` = initial set,
      ``r + 1`` = selected in round r), ``-1`` where unlabeled: the selection history.
    round: ``[]`` int32, rounds completed.
    key: the run's PRNG key (round keys are ``fold_in(key, round)``).
    done: ``[]`` bool, a stopping rule fired.
    methods: the method's state: ``{"acquisition": <its network, or {}>, <hook name>: <hook
      state>, ...}`` (DAL's classifier, DFAL's adversarial copies, the stabilizing stop set).
  """

  labeled: jax.Array
  labels: jax.Array
  acquired_round: jax.Array
  round: jax.Array
  key: jax.Array
  done: jax.Array
  methods: Any = flax.struct.field(default_factory=dict)

  @property
  def num_labeled(self) -> int:
    return int(jnp.sum(self.labeled))

  @property
  def trainable(self) -> jax.Array:
    """``[N]`` bool: labeled in-distribution points (with at least one label element ``>= 0``:
    a mask whose pixels are all unlabeled trains nothing)."""
    return self.labeled & item_has_label(self.labels)


def item_has_label(labels) -> jax.Array:
  """``[N, ...] -> [N]``: whether each item's label holds an element ``>= 0`` (a class, or a
  mask with a labeled pixel); ``OOD_LABEL`` / ``UNKNOWN`` / the ignore value are negative."""
  labels = jnp.asarray(labels)
  ok = labels >= 0
  return jnp.any(ok, axis=tuple(range(1, ok.ndim))) if ok.ndim > 1 else ok


class Query(NamedTuple):
  """What ``propose`` asks the oracle for.

  Attributes:
    round: the round that made it.
    indices: ``[k]`` pool positions to label (empty when the run stops).
    stop: the stopping reason, or None.
    metrics: the round's record so far (training, evaluation, timings).
    scores: ``[k]`` the acquisition's scores of the selected points, for acquisitions that rank
      by a per-item score (``Acquisition.item_score``); None for batch methods, learned and
      random acquisitions.
    regions: with region queries (``RoundConfig.region_size``), ``[k, 4]`` the window of each
      queried image to label (top, left, bottom, right pixels; exclusive ends), or with
      superpixels ``[k, H, W]`` the pixels of each: an image may appear more than once in
      ``indices``. None when whole items are queried.
  """

  round: int
  indices: np.ndarray
  stop: str | None
  metrics: dict[str, Any]
  scores: np.ndarray | None = None
  regions: np.ndarray | None = None


class Oracle(NamedTuple):
  """``label(indices [k]) -> labels [k]`` (``OOD_LABEL`` for out-of-distribution points)."""

  label: Callable[[np.ndarray], np.ndarray]
  num_classes: int


def simulated_oracle(y: np.ndarray, num_classes: int, classes=None) -> Oracle:
  """An oracle that answers from ground-truth labels (the usual pool-based simulation);
  ``classes`` is the task's ``label_classes`` (which label entries are classes)."""
  y = np.asarray(y, np.int32)
  cls = y if classes is None else np.asarray(classes(y))
  bad = (y < OOD_LABEL) | ((cls >= num_classes) | ((cls < 0) & (cls != OOD_LABEL))).reshape(
      *cls.shape, *(1,) * (y.ndim - cls.ndim))
  if bad.any():
    raise ValueError(f"labels out of range [0, {num_classes}) (or OOD_LABEL={OOD_LABEL}) at pool "
                     f"positions {np.unique(np.nonzero(bad)[0])[:10].tolist()}")

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
  if np.ndim(y) != 1:
    raise ValueError(f"a class-balanced initial set needs one class per item; these labels are "
                     f"shaped {np.shape(y)[1:]} per item (set initial_balanced=False)")
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


# Label-free choices of the first labeled set: random, or a selection on embeddings of the pool
# (the inputs themselves when no learned embeddings are given).
COLD_STARTS = ("random", "kmeans", "coreset", "typiclust", "probcover")


def cold_start_indices(key: jax.Array, name: str, embeddings, size: int, *,
                       subsample: int = 0) -> np.ndarray:
  """The first ``size`` pool points to label, chosen before any label exists.

  ``random``: uniformly random points (as :func:`initial_indices` unbalanced). Otherwise the
  registered acquisition ``name`` selects on ``embeddings`` ``[N, ...]`` (flattened): k-means or
  core-set cover the pool; TypiClust (Hacohen et al. 2022) and ProbCover (Yehuda et al. 2022)
  pick typical points that cover it, the low-budget literature's answer to the cold start. With
  ``subsample`` > 0 it selects among that many random pool points (as rounds score a random
  candidate subset). Returns sorted pool indices.
  """
  if name not in COLD_STARTS:
    raise ValueError(f"unknown cold start {name!r}; valid: {list(COLD_STARTS)}")
  if not streaming.is_rows(embeddings):
    embeddings = np.asarray(embeddings, np.float32)
  n = embeddings.shape[0]
  if not 1 <= size <= n:
    raise ValueError(f"initial_size={size} must be in [1, {n}]")
  if name == "random":
    return initial_indices(key, np.zeros(n, np.int32), size, balanced=False, num_classes=1)
  cands = np.arange(n)
  if 0 < subsample < n:
    key, k_sub = jax.random.split(key)
    cands = np.sort(np.asarray(jax.random.permutation(k_sub, n))[:max(subsample, size)])
  # Of a pool on disk only the candidates are read (and checked).
  on_disk = streaming.is_rows(embeddings)
  emb = embeddings[cands].numpy() if on_disk else embeddings
  emb = emb.reshape(emb.shape[0], -1)
  if not np.isfinite(emb).all():
    raise ValueError(f"cold start {name!r}: the embeddings hold NaN or inf")
  emb = emb if on_disk else emb[cands]
  sub = jnp.asarray(emb)
  chosen = acq_lib.acquire(name, {"pre_logits": sub, "embeddings": sub}, key=key, k=size,
                           where=jnp.ones(len(cands), bool))
  return np.sort(cands[np.asarray(chosen)])


def make_setup(model, x_pool, num_classes: int, budget: int) -> Setup:
  """The :class:`dal_jax.methods.Setup` of a pool and model (shapes only; nothing is run)."""
  x1 = jnp.asarray(streaming.materialize(x_pool[:1]))
  variables = jax.eval_shape(model.init, jax.random.key(0), x1)
  pre = jax.eval_shape(lambda v: model.apply(v, x1, train=False)[1]["pre_logits"], variables)
  spec = acq_lib.Spec(input_shape=tuple(x1.shape[1:]), pre_logits_dim=int(pre.shape[-1]),
                      num_classes=num_classes)
  return Setup(spec=spec, pool_size=int(x_pool.shape[0]), budget=budget, x_example=x1)


def init_method_state(method: Method, key: jax.Array, setup: Setup) -> dict[str, Any]:
  """``{"acquisition": ..., <hook>: ...}``: the acquisition's state from ``fold_in(key, 2)``,
  hook i's from ``fold_in(key, 3 + i)``."""
  state = {"acquisition": method.acquisition.init(jax.random.fold_in(key, 2), setup.spec)}
  for i, hook in enumerate(method.hooks):
    if hook.init is not None:
      state[hook.name] = hook.init(jax.random.fold_in(key, 3 + i), setup)
  return state


def init_loop_state(key: jax.Array, num_points: int, initial: np.ndarray, labels: np.ndarray,
                    *, methods: dict[str, Any] | None = None) -> LoopState:
  """A fresh state whose labeled set is ``initial`` with ``labels`` (from an oracle)."""
  initial = np.asarray(initial)
  if len(np.unique(initial)) != len(initial):
    raise ValueError("initial indices contain duplicates")
  labeled = np.zeros(num_points, bool)
  labeled[initial] = True
  labels = np.asarray(labels, np.int32)
  all_labels = np.full((num_points, *labels.shape[1:]), UNKNOWN, np.int32)
  all_labels[initial] = labels
  acquired = np.where(labeled, 0, -1).astype(np.int32)
  return LoopState(labeled=jnp.asarray(labeled), labels=jnp.asarray(all_labels),
                   acquired_round=jnp.asarray(acquired), round=jnp.zeros((), jnp.int32),
                   key=key, done=jnp.zeros((), bool), methods=methods or {"acquisition": {}})


def region_masks(regions, item_shape: tuple[int, ...]) -> np.ndarray:
  """``[k, H, W]`` boolean pixels of regions given as windows ``[k, 4]`` (top, left, bottom,
  right; exclusive ends) or as masks ``[k, H, W]`` (returned as they are); a window outside the
  image raises."""
  regions = np.asarray(regions)
  if regions.ndim == 3 and tuple(regions.shape[1:]) == tuple(item_shape):
    return regions.astype(bool)
  if regions.ndim != 2 or regions.shape[1:] != (4,) or len(item_shape) != 2:
    raise ValueError(f"regions must be windows [k, 4] or masks [k, *{tuple(item_shape)}], got "
                     f"shape {regions.shape}")
  out = np.zeros((len(regions), *item_shape), bool)
  for n, (top, left, bottom, right) in enumerate(regions.tolist()):
    if not (0 <= top < bottom <= item_shape[0] and 0 <= left < right <= item_shape[1]):
      raise ValueError(f"region {[top, left, bottom, right]} is not inside the "
                       f"{item_shape[0]}x{item_shape[1]} pixels")
    out[n, top:bottom, left:right] = True
  return out


def add_region_labels(state: LoopState, indices, regions, labels, *,
                      num_classes: int | None = None) -> LoopState:
  """Adds the answers to region queries: for each ``indices[i]`` the region ``regions[i]`` (a
  window ``(top, left, bottom, right)`` or a pixel mask, :func:`region_masks`) of ``labels[i]``
  (a mask of the item's shape; only the region is read). A region with a pixel labeled already
  is refused."""
  indices, labels = np.asarray(indices), np.asarray(labels)
  n = state.labeled.shape[0]
  item_shape = tuple(state.labels.shape[1:])
  if indices.ndim != 1 or labels.shape != (len(indices), *item_shape) or len(
      np.asarray(regions)) != len(indices):
    raise ValueError(f"region answers need indices [k], regions [k, 4] (or [k, *{item_shape}]) "
                     f"and labels [k, *{item_shape}]; got shapes {indices.shape}, "
                     f"{np.shape(regions)} and {labels.shape}")
  if ((indices < 0) | (indices >= n)).any():
    raise ValueError(f"pool indices must be in [0, {n}); got {indices.tolist()[:10]}")
  masks = region_masks(regions, item_shape)
  new = np.asarray(state.labels).copy()
  labeled = np.asarray(state.labeled).copy()
  acquired = np.asarray(state.acquired_round).copy()
  for i, window, answer, given in zip(indices, masks, labels, np.asarray(regions)):
    where = given.tolist() if np.ndim(given) == 1 else f"of {int(window.sum())} pixels"
    if not window.any():
      raise ValueError(f"region {where} of item {i} has no pixel")
    if (new[i][window] != UNKNOWN).any():
      raise ValueError(f"region {where} of item {i} is labeled already")
    values = answer[window]
    bad = (values < OOD_LABEL) | ((values >= num_classes) if num_classes else False)
    if bad.any():
      raise ValueError(f"labels must be in [0, {num_classes}) or {OOD_LABEL} (not labeled); got "
                       f"{np.unique(values[bad]).tolist()[:10]} in item {i}")
    new[i][window] = values
    if not labeled[i]:
      labeled[i], acquired[i] = True, int(state.round) + 1
  return state.replace(labeled=jnp.asarray(labeled), labels=jnp.asarray(new),
                       acquired_round=jnp.asarray(acquired))


def add_labels(state: LoopState, indices, labels, *, num_classes: int | None = None,
               classes=None) -> LoopState:
  """Adds answers for ``indices`` (distinct, unlabeled pool positions) to the state: ``labels``
  ``[k, ...]`` of the state's label shape; ``classes(labels)`` picks the class entries that
  ``num_classes`` bounds (the task's ``label_classes``; default all entries)."""
  indices = np.asarray(indices)
  labels = np.asarray(labels)
  n = state.labeled.shape[0]
  item_shape = tuple(state.labels.shape[1:])
  if indices.ndim != 1 or labels.shape != (*indices.shape, *item_shape):
    raise ValueError(f"indices [k] and labels [k, *{item_shape}] must have one length k; got "
                     f"shapes {indices.shape} and {labels.shape}")
  out_of_range = (indices < 0) | (indices >= n)
  if out_of_range.any():
    raise ValueError(f"pool indices must be in [0, {n}); got {indices[out_of_range].tolist()[:10]}")
  cls = labels if classes is None else np.asarray(classes(labels))
  bad = np.concatenate([labels[labels < OOD_LABEL].reshape(-1),
                        cls[cls >= num_classes].reshape(-1) if num_classes else []])
  if bad.size:
    raise ValueError(f"labels must be in [0, {num_classes}) or OOD_LABEL={OOD_LABEL}; got "
                     f"{bad.astype(int).tolist()[:10]}")
  already = np.asarray(state.labeled)[indices]
  if already.any() or len(np.unique(indices)) != len(indices):
    raise ValueError(f"selection must be distinct unlabeled points; got labeled/duplicate "
                     f"indices {indices[already].tolist() or indices.tolist()}")
  return state.replace(
      labeled=state.labeled.at[indices].set(True),
      labels=state.labels.at[indices].set(jnp.asarray(labels, jnp.int32)),
      acquired_round=state.acquired_round.at[indices].set(state.round + 1))


REGION_SHAPES = ("window", "superpixel")


class RoundConfig(NamedTuple):
  """What a round needs besides the states, the method and the learner.

  Attributes:
    query_size: k, points labeled per round.
    mc_samples: MC-dropout samples for acquisitions that read log-probs (0 = deterministic).
    pool_subsample: score at most this many random unlabeled candidates per round (0 = all).
    budget: stop once this many points are labeled.
    target_accuracy: stop once the task's headline test metric (classification: accuracy)
      reaches this (``None``: never).
    warm_start: continue from the previous round's weights instead of re-initialising.
    ensemble_size: E models per seed (a deep ensemble; DEBAL with ``mc_samples > 0``).
    region_size: 0: whole items are queried. r > 0 (segmentation): ``r x r`` windows of the
      images are queried, ``query_size`` windows per round, chosen by the acquisition's
      per-pixel score reduced per window (:mod:`dal_jax.acquisition._regions`); ``budget`` then
      counts labeled pixels in images' worth (labeled pixels / (H·W)), as does ``num_labels``.
    region_shape: ``window`` (``r x r`` squares) or ``superpixel`` (SLIC superpixels of about
      ``r²`` pixels, ``LoopData.segments``; Cai et al. 2021), each scored by the reduction of its
      pixels' scores.
  """

  query_size: int
  mc_samples: int = 20
  pool_subsample: int = 5000
  budget: int = 220
  target_accuracy: float | None = None
  warm_start: bool = False
  ensemble_size: int = 1
  region_size: int = 0
  region_shape: str = "window"


def check_round_config(config: RoundConfig) -> RoundConfig:
  """Every field in its allowed range (one line naming the field), else ``ValueError``."""
  for field, lo in (("query_size", 1), ("mc_samples", 0), ("pool_subsample", 0), ("budget", 1),
                    ("ensemble_size", 1), ("region_size", 0)):
    v = getattr(config, field)
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
      raise ValueError(f"RoundConfig.{field} must be an integer >= {lo}, got {v!r}")
  if 0 < config.pool_subsample < config.query_size and not config.region_size:
    raise ValueError(f"RoundConfig.pool_subsample={config.pool_subsample} must be 0 (the whole "
                     f"pool) or at least query_size={config.query_size}")
  if config.region_shape not in REGION_SHAPES:
    raise ValueError(f"RoundConfig.region_shape must be one of {REGION_SHAPES}, got "
                     f"{config.region_shape!r}")
  t = config.target_accuracy
  if t is not None and not (isinstance(t, (int, float, np.number)) and 0 <= t <= 1):
    raise ValueError(f"RoundConfig.target_accuracy must be None or a number in [0, 1], got {t!r}")
  return config


def query_size(state: LoopState, config: RoundConfig) -> int:
  """Points to query this round: ``query_size``, or what is left of the budget in the last
  round (``budget=65``, ``k=10``, 20 initial labels: four rounds of 10, then 5). With region
  queries: windows, as many as the pixels left of the budget hold."""
  if not config.region_size:
    return max(0, min(config.query_size, config.budget - state.num_labeled))
  left = pixels_left(state, config)
  if config.region_shape == "superpixel":  # superpixels differ in size: _select_regions stops
    return config.query_size if left > 0 else 0  # at the budget's pixels
  return max(0, min(config.query_size, left // config.region_size**2))


def pixels_left(state: LoopState, config: RoundConfig) -> int:
  """With region queries: the pixels the budget still allows (``budget`` images' worth minus the
  labeled pixels)."""
  return (config.budget * int(np.prod(state.labels.shape[1:]))
          - int(jnp.sum(state.labels != UNKNOWN)))


def labeled_amount(state: LoopState, config: RoundConfig) -> float:
  """What the budget counts: labeled items, or with region queries labeled pixels in images'
  worth (pixels / (H·W))."""
  if not config.region_size:
    return state.num_labeled
  return float(jnp.sum(state.labels != UNKNOWN)) / float(np.prod(state.labels.shape[1:]))


def _window_asked(state: LoopState, size: int) -> np.ndarray:
  """``[N, G]`` whether each ``size x size`` window has a labeled (asked) pixel."""
  asked = np.asarray(state.labels) != UNKNOWN
  n, (gh, gw) = asked.shape[0], acq_lib.region_grid(asked.shape[1:], size)
  return asked.reshape(n, gh, size, gw, size).any(axis=(2, 4)).reshape(n, gh * gw)


def closed_items(state: LoopState, config: RoundConfig) -> jax.Array:
  """``[N]`` items nothing more can be asked about: the labeled ones, or with region queries
  those whose every window is labeled."""
  if not config.region_size:
    return state.labeled
  if config.region_shape == "superpixel":  # superpixels tile the image: every pixel asked
    return jnp.all((state.labels != UNKNOWN).reshape(state.labels.shape[0], -1), axis=1)
  return jnp.asarray(_window_asked(state, config.region_size).all(axis=1))


class LoopData(NamedTuple):
  """Device arrays of the fixed splits (pool labels are only known through the oracle). The
  validation and test sets are optional.

  ``x_pool`` may be a pool on disk (:class:`dal_jax.streaming.RecordPool`) instead of an array:
  each round then trains on the labeled items read by index, scores the candidates chunk by
  chunk (score acquisitions never hold more than a chunk's predictions; batch methods read
  their candidates, ``pool_subsample`` of them), and methods that need every pool input at once
  (semi-supervised training on the unlabeled pool, CEAL) are refused.
  """

  x_pool: jax.Array
  x_val: jax.Array | None = None
  y_val: jax.Array | None = None
  x_test: jax.Array | None = None
  y_test: jax.Array | None = None
  embeddings: jax.Array | None = None  # [N_pool, D] self-supervised, for Needs(embeddings=True)
  segments: np.ndarray | None = None  # [N_pool, H, W] superpixels, for region_shape=superpixel


class RoundContext(NamedTuple):
  """What round hooks may use: the learner, the data, the seeds' states and round keys.

  Attributes:
    learner: the :class:`dal_jax.learner.Learner`.
    data: :class:`LoopData`.
    config: :class:`RoundConfig`.
    states: the seeds' states at the start of the round (G of them).
    train_keys: ``[G]`` the seeds' training keys of this round.
    round: the round index.
    num_classes: C.
    train_set: ``(x, labels [M, ·], trainable [M, ·], unlabeled [M, ·])`` the round's training
      set: the pool followed by the hooks' extra examples.
  """

  learner: learner_lib.Learner
  data: LoopData
  config: RoundConfig
  states: tuple[LoopState, ...]
  train_keys: tuple[jax.Array, ...]
  round: int
  num_classes: int
  train_set: tuple[Any, ...] = ()

  @property
  def members(self) -> int:
    return self.config.ensemble_size

  def model_keys(self, seed_keys) -> jax.Array:
    """``[M]`` keys of every model from one key per seed (:func:`learner.member_keys`)."""
    return jnp.concatenate([learner_lib.member_keys(k, self.members) for k in seed_keys])

  def per_model(self, per_seed) -> jax.Array:
    """``[G, ...] -> [M, ...]``: each seed's array repeated for its members."""
    return jnp.repeat(jnp.asarray(per_seed), self.members, axis=0)

  def pool_inputs(self, positions) -> jax.Array:
    """The inputs of pool items ``positions`` (any integer array shape), read from disk when
    the pool is there."""
    x = self.data.x_pool[np.asarray(positions)]
    return jnp.asarray(streaming.materialize(x))

  def predict(self, variables, x, *, per_seed: bool = False) -> jax.Array:
    """Deterministic predictions ``[G, E, N, C]`` of ``x [N, ...]`` (or ``[G, N, ...]``)."""
    out = self.learner.predict(variables, self.per_model(x) if per_seed else x,
                               per_model_x=per_seed)
    lp = out.log_probs[:, 0]
    return lp.reshape(len(self.states), self.members, *lp.shape[1:])

  def fit(self, labels, trainable, *, keys, init=None):
    """Trains every model on the round's training set with the pool part's labels / trainable
    mask replaced by the per-seed ``labels`` / ``trainable`` ``[G, N]`` (extra examples kept)."""
    d = self.data
    x, all_labels, all_trainable, unlabeled = self.train_set
    n = d.x_pool.shape[0]
    all_labels = all_labels.at[:, :n].set(self.per_model(labels))
    all_trainable = all_trainable.at[:, :n].set(self.per_model(trainable))
    val = None if d.x_val is None else (d.x_val, d.y_val)
    return self.learner.fit(x, all_labels, all_trainable, keys=keys, val=val, init=init,
                            unlabeled=unlabeled if self.learner.unlabeled_ratio else None)


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


def _round_keys(state: LoopState):
  """(train, candidates, score, select) keys of the state's current round."""
  return jax.random.split(jax.random.fold_in(state.key, state.round), 4)


def _training_set(states, method: Method, data: LoopData, members: int):
  """``(x [N' + Σ P_g], labels [M, ·], trainable [M, ·], unlabeled [M, ·])``: the pool (N' = N)
  plus each seed's extra examples (hooks' ``train_extra``), every model seeing only its own
  seed's. From a pool on disk, only the items some seed trains on are read (N' of them)."""
  if streaming.is_rows(data.x_pool):
    positions = np.nonzero(np.any(np.stack([np.asarray(s.trainable) for s in states]), 0))[0]
    base = jnp.asarray(data.x_pool[positions].numpy())
    take = lambda a: a[positions]  # noqa: E731
  else:
    base, take = data.x_pool, lambda a: a  # noqa: E731
  extras = [[h.train_extra(s.methods[h.name]) for h in method.hooks if h.train_extra]
            for s in states]
  xs, labels, trainable = [base], [], []
  sizes = [sum(int(y.shape[0]) for _, y in e) for e in extras]
  total = sum(sizes)
  offset = 0
  for s, e, size in zip(states, extras, sizes):
    xs += [x.astype(base.dtype) for x, _ in e]
    y_e = [y for _, y in e]
    own = (jnp.concatenate(y_e) if y_e
           else jnp.zeros((0, *s.labels.shape[1:]), jnp.int32))
    pad = lambda a, fill: jnp.concatenate([  # noqa: E731
        jnp.full((offset, *a.shape[1:]), fill, a.dtype), a,
        jnp.full((total - offset - size, *a.shape[1:]), fill, a.dtype)])
    labels.append(jnp.concatenate([take(s.labels), pad(own, UNKNOWN)]))
    trainable.append(jnp.concatenate([take(s.trainable), pad(item_has_label(own), False)]))
    offset += size
  x = jnp.concatenate(xs) if total else base
  unlabeled = [jnp.concatenate([take(~s.labeled), jnp.zeros((total,), bool)]) for s in states]
  rep = lambda a: jnp.repeat(jnp.stack(a), members, axis=0)  # noqa: E731
  return x, rep(labels), rep(trainable), rep(unlabeled)


def _check_pool_on_disk(method: Method, learner: learner_lib.Learner, data: LoopData) -> None:
  if not streaming.is_rows(data.x_pool):
    return
  whole = [h.name for h in method.hooks if h.whole_pool]
  if learner.unlabeled_ratio:
    whole += [t.name for t in learner.terms if t.unlabeled_ratio]
  if whole:
    raise ValueError(f"method {method.name!r} ({', '.join(whole)}) uses every pool input at once, "
                     "so it does not run on a pool on disk; use a pool in memory "
                     "(config.pool_on_disk=False)")


def _stop_reason(state: LoopState, metrics: dict[str, Any], config: RoundConfig,
                 headline: str) -> str | None:
  if labeled_amount(state, config) >= config.budget or (
      config.region_size and query_size(state, config) == 0):
    return "budget"
  if (config.target_accuracy is not None and headline in metrics
      and metrics[headline] >= config.target_accuracy):
    return "target_accuracy"
  if metrics.get("stop"):
    return metrics["stop"]
  if config.region_size and config.region_shape == "superpixel":
    if not bool(jnp.any(state.labels == UNKNOWN)):  # every superpixel labeled
      return "pool_exhausted"
  elif config.region_size:
    if int(np.sum(~_window_asked(state, config.region_size))) < query_size(state, config):
      return "pool_exhausted"
  elif int(jnp.sum(~state.labeled)) < query_size(state, config):
    return "pool_exhausted"
  return None


def _item_bald(log_probs) -> jax.Array:
  """``[N]`` BALD of each item (the mean over its elements when it has many, e.g. pixels)."""
  bald = acq_lib.bald(log_probs)
  return jnp.mean(bald, axis=tuple(range(1, bald.ndim))) if bald.ndim > 1 else bald


def _mean_bald(log_probs, where) -> float:
  """Diagnostic: how much the MC samples / members disagree on the candidates."""
  bald = _item_bald(log_probs)
  return float(jnp.sum(jnp.where(where, bald, 0.0)) / jnp.maximum(jnp.sum(where), 1))


def _scores_by_chunk(acquisition, learner, variables, x_cands, where, members, predict):
  """Per active seed ``(scores [W], mean BALD or None)`` of the candidates of a pool on disk,
  read and predicted one chunk at a time (``item_score`` on each chunk's outputs): the same
  values as scoring all candidates at once, holding one chunk's predictions."""
  width = x_cands.shape[1]
  scores = [np.empty(width, np.float32) for _ in range(x_cands.shape[0])]
  bald_sum, count = np.zeros(len(scores)), np.zeros(len(scores))
  x_models = x_cands[np.repeat(np.arange(len(scores)), members)]
  for start, p in learner.predict_chunks(variables, x_models, **predict):
    n = p.log_probs.shape[2]
    for j in range(len(scores)):
      block = slice(j * members, (j + 1) * members)
      out = {"log_probs": learner_lib.ensemble_log_probs(p.log_probs[block])}
      if p.pre_logits is not None:
        out["pre_logits"] = p.pre_logits[j * members]
      out.update({k: v[j * members] for k, v in p.outputs.items()})
      w = where[j][start:start + n]
      scores[j][start:start + n] = np.asarray(acquisition.item_score(out, w))
      if out["log_probs"].shape[0] > 1:
        bald = _item_bald(out["log_probs"])
        bald_sum[j] += float(jnp.sum(jnp.where(w, bald, 0.0)))
        count[j] += float(jnp.sum(w))
  multi = members * max(predict["mc_samples"], 1) > 1
  return [(jnp.asarray(sc), float(b / max(c, 1)) if multi else None)
          for sc, b, c in zip(scores, bald_sum, count)]


def _check_regions(method: Method, data: LoopData, config: RoundConfig) -> None:
  if not config.region_size:
    return
  acquisition = method.acquisition
  if acquisition.element_score is None:
    raise ValueError(f"region queries (region_size={config.region_size}) rank windows by a "
                     "per-pixel score (entropy, bald, margin, ripu, random, foreground_random, "
                     f"...); {acquisition.name!r} is not one")
  if method.hooks:
    hooks = ", ".join(h.name for h in method.hooks)
    raise ValueError(f"method {method.name!r} has round hooks ({hooks}), which work on whole "
                     "items; region queries do not run them")
  if streaming.is_rows(data.x_pool):
    raise ValueError("region queries do not run on a pool on disk yet; use a pool in memory "
                     "(config.pool_on_disk=False)")
  if config.region_shape == "superpixel" and data.segments is None:
    raise ValueError("region_shape='superpixel' needs the pool's superpixels in "
                     "LoopData.segments (dal_jax.acquisition.superpixels)")


def _select_regions(acquisition, outputs, state: LoopState, cands, where, config: RoundConfig,
                    key: jax.Array, segments_of=None):
  """``(candidate positions [k], regions, region scores [k])``: the regions of the candidates
  to label, by the acquisition's per-pixel score reduced per region (``element_reduction``),
  regions with a labeled pixel excluded. Windows (regions ``[k, 4]``): neighbours of a chosen
  window passed over (:func:`dal_jax.acquisition.select_windows`); superpixels (regions
  ``[k, H, W]`` pixel masks, from ``segments_of`` ``[N_pool, H, W]``): the best ones
  (:func:`dal_jax.acquisition.select_segments`)."""
  size = config.region_size
  labels = state.labels[cands]
  pixels = jnp.asarray(acquisition.element_score(outputs, key=key, shape=labels.shape))
  if pixels.ndim != 3:
    raise ValueError(f"region queries need a per-pixel score [N, H, W] of images; "
                     f"{acquisition.name!r} gave shape {pixels.shape}")
  asked = (labels != UNKNOWN) | ~where[:, None, None]
  reduction, q = acquisition.element_reduction or ("mean", 0.1)
  if config.region_shape == "superpixel":
    segments = np.asarray(segments_of)[np.asarray(cands)]
    per = acq_lib.segment_scores(pixels, segments, asked, reduction=reduction, q=q)
    n, width = per.shape
    sizes = np.bincount((np.arange(n)[:, None] * width + segments.reshape(n, -1)).reshape(-1),
                        minlength=n * width).reshape(n, width)
    items, chosen = acq_lib.select_segments(per, query_size(state, config), sizes=sizes,
                                            pixels=pixels_left(state, config))
    masks = segments[items] == chosen[:, None, None]
    return items, masks, per[items, chosen]
  windows = acq_lib.window_scores(pixels, asked, size, reduction=reduction, q=q)
  rows_cols = acq_lib.region_grid(tuple(labels.shape[1:]), size)
  items, chosen = acq_lib.select_windows(windows, query_size(state, config), rows_cols)
  regions = np.array([acq_lib.window_box(w, rows_cols, size) for w in chosen],
                     np.int64).reshape(-1, 4)
  return items, regions, np.asarray(windows)[items, chosen]


class PoolInputs(NamedTuple):
  """What a round computed on its candidates, from which each seed's acquisition ``outputs``
  are assembled (:data:`OUTPUT_SOURCES`).

  Attributes:
    learner, data: the round's.
    needs: the acquisition's :class:`dal_jax.acquisition.Needs`.
    cands: per active seed, ``[W]`` candidate pool positions (padded by repetition).
    where: per active seed, ``[W]`` which candidates count.
    variables: the active seeds' stacked variables (``members`` models per seed).
    members: E.
    x_cands: ``[G_active, W, ...]`` the candidates' inputs, or None when nothing reads them.
    preds: the learner's predictions of the candidates (None: not needed, or scored by chunk).
    scored: per active seed ``(scores [W], pool BALD or None)`` of a pool on disk scored chunk
      by chunk, or None.
  """

  learner: learner_lib.Learner
  data: LoopData
  needs: Any
  cands: list
  where: list
  variables: Any
  members: int
  x_cands: Any = None
  preds: Any = None
  scored: Any = None


def _predicted_outputs(inputs: PoolInputs, j: int, name: str) -> dict[str, Any]:
  if inputs.preds is None:
    return {}
  m, preds = inputs.members, inputs.preds
  out = {"log_probs": learner_lib.ensemble_log_probs(preds.log_probs[j * m:(j + 1) * m])}
  if preds.pre_logits is not None:
    out["pre_logits"] = preds.pre_logits[j * m]
  out.update({k: v[j * m] for k, v in preds.outputs.items()})
  return out


def _chunk_scored_outputs(inputs: PoolInputs, j: int, name: str) -> dict[str, Any]:
  return {} if inputs.scored is None else {"scores": inputs.scored[j][0]}


def _input_outputs(inputs: PoolInputs, j: int, name: str) -> dict[str, Any]:
  needs = inputs.needs
  if not (needs.inputs or needs.model):
    return {}
  return {"x": jnp.asarray(streaming.materialize(inputs.x_cands[j]))}


def _embedding_outputs(inputs: PoolInputs, j: int, name: str) -> dict[str, Any]:
  if not inputs.needs.embeddings:
    return {}
  if inputs.data.embeddings is None:
    raise ValueError(f"acquisition {name!r} selects on self-supervised embeddings of the pool: "
                     "set config.embeddings (e.g. 'simclr')")
  return {"embeddings": inputs.data.embeddings[inputs.cands[j]]}


def _model_outputs(inputs: PoolInputs, j: int, name: str) -> dict[str, Any]:
  if not inputs.needs.model:
    return {}
  first = learner_lib.index(inputs.variables, j * inputs.members)
  return {"model": inputs.learner.model, "variables": first["model"]}


# Each source adds the entries of one kind of acquisition input to a seed's ``outputs``
# (``source(inputs: PoolInputs, j, acquisition name) -> dict``); a new kind of input is one more
# source here, not a branch in propose.
OUTPUT_SOURCES = [_predicted_outputs, _chunk_scored_outputs, _input_outputs, _embedding_outputs,
                  _model_outputs]


def _fit_and_evaluate(states: list[LoopState], method: Method, learner: learner_lib.Learner,
                      data: LoopData, config: RoundConfig, num_classes: int, variables, keys):
  """Trains every seed's models (one stacked fit), runs the hooks after the fit and evaluates
  on the test set: ``(states, variables, context, metrics)``."""
  g_count, members = len(states), config.ensemble_size
  rnd = int(states[0].round)
  metrics = [{"round": rnd, "num_labels": labeled_amount(s, config),
              "num_trainable": int(jnp.sum(s.trainable))} for s in states]
  if g_count > 1:
    for m in metrics:
      m["parallel_seeds"] = g_count
  t0 = time.perf_counter()
  x, labels, trainable, unlabeled = _training_set(states, method, data, members)
  ctx = RoundContext(learner=learner, data=data, config=config, states=tuple(states),
                     train_keys=tuple(k[0] for k in keys), round=rnd, num_classes=num_classes,
                     train_set=(x, labels, trainable, unlabeled))
  fit = learner.fit(x, labels, trainable, keys=ctx.model_keys(ctx.train_keys),
                    val=None if data.x_val is None else (data.x_val, data.y_val),
                    init=variables if config.warm_start else None,
                    unlabeled=unlabeled if learner.unlabeled_ratio else None)
  variables = fit.variables
  for g, m in enumerate(metrics):
    block = slice(g * members, (g + 1) * members)
    m.update(train_steps=int(fit.steps[block].max()),
             val_accuracy=float(np.mean(fit.best_val_accuracy[block])),
             train_loss=float(np.mean(fit.train_loss[block])))
  for hook in method.hooks:
    if hook.after_fit is not None:
      variables, hook_states, hook_metrics = hook.after_fit(
          [s.methods[hook.name] if hook.name in s.methods else None for s in states], ctx,
          variables)
      for g in range(g_count):
        if hook.name in states[g].methods:
          states[g] = states[g].replace(methods={**states[g].methods,
                                                 hook.name: hook_states[g]})
        metrics[g].update(hook_metrics[g])
  if data.x_test is not None:
    test = learner.predict(variables, data.x_test, outputs=learner.task.metric_outputs)
    for g, m in enumerate(metrics):
      block = slice(g * members, (g + 1) * members)
      lp = learner_lib.ensemble_log_probs(test.log_probs[block])
      m.update(learner.task.metrics(acq_lib.mean_log_probs(lp), data.y_test,
                                    **{k: jnp.mean(v[block], axis=0)
                                       for k, v in test.outputs.items()}))
  for m in metrics:
    m["time_train"] = time.perf_counter() - t0
  return states, variables, ctx, metrics


def _pool_inputs(states: list[LoopState], active: list[int], method: Method, ctx: RoundContext,
                 variables, keys, config: RoundConfig) -> PoolInputs:
  """The active seeds' candidates (all of the pool, or ``pool_subsample`` random open items) and
  what the acquisition needs predicted on them."""
  learner, data = ctx.learner, ctx.data
  acquisition, members = method.acquisition, config.ensemble_size
  needs = acquisition.needs
  cands = []
  closed = {g: closed_items(states[g], config) for g in active}
  for g in active:
    n_unlabeled = int(jnp.sum(~closed[g]))
    sub = 0 < config.pool_subsample < n_unlabeled
    cands.append(_scored_points(keys[g][1], closed[g], config.pool_subsample) if sub
                 else jnp.arange(data.x_pool.shape[0]))
  width = max(c.shape[0] for c in cands)
  valid = [jnp.arange(width) < c.shape[0] for c in cands]
  cands = [jnp.pad(c, (0, width - c.shape[0]), mode="edge") for c in cands]
  models = np.array([g * members + e for g in active for e in range(members)])
  active_vars = (variables if len(active) == len(states)
                 else jax.tree.map(lambda v: v[models], variables))
  sub_ctx = ctx._replace(states=tuple(states[g] for g in active))
  where = [~closed[g][cands[j]] & valid[j] for j, g in enumerate(active)]
  inputs = PoolInputs(learner=learner, data=data, needs=needs, cands=cands, where=where,
                      variables=active_vars, members=members)
  predict = dict(keys=sub_ctx.per_model(jnp.stack([keys[g][2] for g in active])),
                 mc_samples=config.mc_samples if needs.log_probs else 0,
                 with_pre_logits=needs.pre_logits, outputs=needs.outputs, per_model_x=True)
  on_disk = streaming.is_rows(data.x_pool)
  x_cands = None  # [G_active, W, ...], gathered only for acquisitions that read it
  if needs.predictions or needs.inputs or needs.model:
    x_cands = (data.x_pool[np.stack([np.asarray(c) for c in cands])] if on_disk
               else jnp.stack([data.x_pool[c] for c in cands]))
  if needs.predictions and on_disk and acquisition.item_score is not None:
    return inputs._replace(x_cands=x_cands, scored=_scores_by_chunk(
        acquisition, learner, active_vars, x_cands, where, members, predict))
  if needs.predictions:
    x_models = (x_cands[np.repeat(np.arange(len(active)), members)] if on_disk
                else sub_ctx.per_model(x_cands))
    preds = learner.predict(active_vars, x_models, **predict)
    jax.block_until_ready(preds)
    return inputs._replace(x_cands=x_cands, preds=preds)
  return inputs._replace(x_cands=x_cands)


def _choose(state: LoopState, outputs, inputs: PoolInputs, j: int, method: Method,
            config: RoundConfig, key: jax.Array):
  """One seed's selection: ``(positions [k], regions or None, scores or None, acquisition
  state)``."""
  acquisition, cands, where = method.acquisition, inputs.cands[j], inputs.where[j]
  if config.region_size:
    chosen, regions, scores = _select_regions(acquisition, outputs, state, cands, where, config,
                                              key, inputs.data.segments)
    return np.asarray(cands)[chosen], regions, scores, state.methods["acquisition"]
  if (acquisition.item_score is not None and inputs.needs.predictions
      and "scores" not in outputs):
    outputs["scores"] = acquisition.item_score(outputs, where)  # what select computes
  chosen, acq_state = acq_lib.checked_select(
      acquisition, state.methods["acquisition"], outputs, key=key, k=query_size(state, config),
      where=where)
  scores = (np.asarray(outputs["scores"])[np.asarray(chosen)] if "scores" in outputs
            else None)
  return np.asarray(cands[chosen]), None, scores, acq_state


def propose(states: Sequence[LoopState], *, method: Method, learner: learner_lib.Learner,
            data: LoopData, config: RoundConfig, num_classes: int, variables=None
            ) -> tuple[list[LoopState], list[Query], Any]:
  """The first half of a round for G >= 1 seeds: train, hooks, evaluate, stop?, score, select.

  Args:
    states: the seeds' loop states, all at the same round and not done.
    method: the :class:`dal_jax.methods.Method`.
    learner: the :class:`dal_jax.learner.Learner` (its loss terms are the method's).
    data: the fixed splits; without a test set no test metrics are recorded.
    config: :class:`RoundConfig`.
    num_classes: C.
    variables: the previous round's stacked variables (used with ``config.warm_start``).

  Returns:
    ``(states, queries, variables)``: the states with updated method state, one
    :class:`Query` per seed, and the trained stacked variables (M = G·E models).
  """
  states = list(states)
  check_round_config(config)
  if not states or len({int(s.round) for s in states}) != 1 or any(bool(s.done) for s in states):
    raise ValueError("propose needs at least one state; all at the same round and not done")
  _check_pool_on_disk(method, learner, data)
  _check_regions(method, data, config)
  rnd = int(states[0].round)
  keys = [_round_keys(s) for s in states]
  states, variables, ctx, metrics = _fit_and_evaluate(states, method, learner, data, config,
                                                      num_classes, variables, keys)
  queries: list[Query | None] = [None] * len(states)
  for g, (state, m) in enumerate(zip(states, metrics)):
    m["stop"] = _stop_reason(state, m, config, learner.task.headline)
    if m["stop"] is not None:
      m.update(time_score=0.0, time_select=0.0)
      queries[g] = Query(round=rnd, indices=np.zeros(0, np.int64), stop=m["stop"], metrics=m)
  active = [g for g in range(len(states)) if queries[g] is None]
  if not active:
    return states, queries, variables

  t1 = time.perf_counter()
  inputs = _pool_inputs(states, active, method, ctx, variables, keys, config)
  t2 = time.perf_counter()
  for j, g in enumerate(active):
    outputs: dict[str, Any] = {}
    for source in OUTPUT_SOURCES:
      outputs.update(source(inputs, j, method.acquisition.name))
    if inputs.scored is not None and inputs.scored[j][1] is not None:
      metrics[g]["pool_bald"] = inputs.scored[j][1]
    if "log_probs" in outputs and outputs["log_probs"].shape[0] > 1:
      metrics[g]["pool_bald"] = _mean_bald(outputs["log_probs"], inputs.where[j])
    selected, regions, scores, acq_state = _choose(states[g], outputs, inputs, j, method,
                                                   config, keys[g][3])
    state = states[g].replace(methods={**states[g].methods, "acquisition": acq_state})
    first = learner_lib.index(inputs.variables, j * inputs.members)
    for hook in method.hooks:
      if hook.after_select is not None:
        state = state.replace(methods={**state.methods, hook.name: hook.after_select(
            state.methods[hook.name], ctx, first, selected)})
    states[g] = state
    queries[g] = Query(round=rnd, indices=selected, stop=None, metrics=metrics[g],
                       scores=scores, regions=regions)
  t3 = time.perf_counter()
  for g in active:
    metrics[g].update(time_score=t2 - t1, time_select=t3 - t2, selected=queries[g].indices.tolist())
    regions = queries[g].regions
    if regions is not None and regions.ndim == 2:
      metrics[g]["selected_regions"] = regions.tolist()
    elif regions is not None:  # superpixels: their numbers in data.segments
      metrics[g]["selected_superpixels"] = [
          int(data.segments[i][m].reshape(-1)[0]) for i, m in zip(queries[g].indices, regions)]
  return states, queries, variables


def incorporate(state: LoopState, query: Query, labels, *, method: Method,
                num_classes: int | None = None, classes=None) -> LoopState:
  """The second half of a round: the answers to ``query`` join the labeled set.

  Args:
    state: the state ``propose`` returned for this seed.
    query: its :class:`Query`.
    labels: ``[k]`` the answers (``OOD_LABEL`` for out-of-distribution points); ignored when
      the query stops the run.
    method: the method (its hooks see the answers).
    num_classes: C, to check the labels.
    classes: the task's ``label_classes`` (which label entries are classes).

  Returns:
    The state after the round (``round + 1``; ``done`` when the query stopped the run).
  """
  if int(state.round) != query.round:
    raise ValueError(f"the query belongs to round {query.round} but the state is at round "
                     f"{int(state.round)}")
  if query.stop is not None:
    return state.replace(round=state.round + 1, done=jnp.array(True))
  if query.regions is not None:
    return add_region_labels(state, query.indices, query.regions, labels,
                             num_classes=num_classes).replace(round=state.round + 1)
  state = add_labels(state, query.indices, labels, num_classes=num_classes, classes=classes)
  for hook in method.hooks:
    if hook.after_answers is not None:
      state = state.replace(methods={**state.methods, hook.name: hook.after_answers(
          state.methods[hook.name], query.indices, np.asarray(labels))})
  return state.replace(round=state.round + 1)


def al_round(states: Sequence[LoopState], *, method: Method, learner: learner_lib.Learner,
             data: LoopData, oracle: Oracle, config: RoundConfig, variables=None
             ) -> tuple[list[LoopState], list[dict[str, Any]], Any]:
  """One simulated round for G >= 1 seeds: :func:`propose`, the oracle, :func:`incorporate`.

  Returns:
    ``(states, metrics per seed, stacked variables)``; metrics hold the labeled-set size the
    model was trained on, test accuracy / NLL / ECE (with a test set), train / score / select
    wall times, the selected pool indices and their class histogram, and the stopping reason.
  """
  states, queries, variables = propose(states, method=method, learner=learner, data=data,
                                       config=config, num_classes=oracle.num_classes,
                                       variables=variables)
  out_states, out_metrics = [], []
  for state, query in zip(states, queries):
    labels = (oracle.label(query.indices) if query.stop is None
              else np.zeros(0, np.int32))
    if query.regions is not None and len(labels):  # the annotator labels the regions alone
      inside = region_masks(query.regions, labels.shape[1:])
      labels = np.where(inside, labels, UNKNOWN)
    cls = (np.asarray(learner.task.label_classes(labels)) if len(labels)
           else np.zeros(0, np.int32))
    hist = np.bincount(cls[cls >= 0], minlength=oracle.num_classes)
    query.metrics.update(selected=query.indices.tolist(), selected_class_histogram=hist.tolist(),
                         selected_ood=int(np.sum(~np.asarray(item_has_label(labels)))))
    out_states.append(incorporate(state, query, labels, method=method,
                                  num_classes=oracle.num_classes,
                                  classes=learner.task.label_classes))
    out_metrics.append(query.metrics)
  return out_states, out_metrics, variables
