"""A method as a unit: its acquisition, its training-loss terms and its round hooks.

Anything beyond a score — a network trained with the model (LL4AL), an adversarial alignment
(WAAL), pseudo-labels (CEAL), adversarial training copies (DFAL), consistency on the unlabeled
pool (FixMatch), mixup — is a :class:`Method` made in one file of ``dal_jax.methods`` and
registered by name. The loop, the learner and the runner never name a method: the train step is
cross-entropy plus the method's :class:`dal_jax.training.LossTerm` s, and the round calls the
method's :class:`RoundHook` s at fixed points.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple

from dal_jax import acquisition as acq_lib
from dal_jax import training


class Setup(NamedTuple):
  """What hooks and acquisitions may need to size their state.

  Attributes:
    spec: :class:`dal_jax.acquisition.Spec` (input shape, pre-logits width, classes).
    pool_size: N.
    budget: the label budget of the run (an upper bound on labeled points).
    x_example: ``[1, ...]`` one pool input.
  """

  spec: Any
  pool_size: int
  budget: int
  x_example: Any


class RoundHook(NamedTuple):
  """Code a method runs at fixed points of every round (each optional).

  Hook state lives in ``LoopState.methods[name]`` (one per seed) and is checkpointed with it.

  Attributes:
    name: key of the hook's state.
    init: ``init(key, setup: Setup) -> state``.
    after_fit: ``after_fit(states [G], ctx: dal_jax.loop.RoundContext, variables) ->
      (variables, states, metrics [G])`` after training, before evaluation and selection (CEAL
      fine-tunes on pseudo-labels; stabilizing predictions compares successive models; a metric
      ``"stop"`` stops that seed's run with that reason).
    train_extra: ``train_extra(state) -> (x [P, ...], y [P])`` examples added to that seed's
      training set (``y < 0``: not trained on), e.g. DFAL's adversarial copies.
    after_select: ``after_select(state, ctx, variables_0, selected [k]) -> state`` once the
      batch is chosen (``variables_0``: the seed's first model).
    after_answers: ``after_answers(state, selected [k], labels [k]) -> state`` when the answers
      are incorporated.
    whole_pool: the hook predicts or retrains on every pool input at once (CEAL's
      pseudo-labels), so it cannot run on a pool on disk (``config.pool_on_disk``).
  """

  name: str
  init: Callable[..., Any] | None = None
  after_fit: Callable[..., Any] | None = None
  train_extra: Callable[..., Any] | None = None
  after_select: Callable[..., Any] | None = None
  after_answers: Callable[..., Any] | None = None
  whole_pool: bool = False


class Method(NamedTuple):
  """An acquisition with the training-loss terms and round hooks that belong to it.

  Attributes:
    name: registry name.
    acquisition: the :class:`dal_jax.acquisition.Acquisition` (None for training-only methods
      combined with another method's acquisition, e.g. mixup).
    loss_terms: added to the cross-entropy of every train step.
    hooks: run at fixed points of every round.
  """

  name: str
  acquisition: acq_lib.Acquisition | None
  loss_terms: tuple[training.LossTerm, ...] = ()
  hooks: tuple[RoundHook, ...] = ()


class Registered(NamedTuple):
  make: Callable[..., Method]
  options: dict[str, Any]
  doc: str


METHODS: dict[str, Registered] = {}


def register_method(name: str, make: Callable[..., Method], *, options: Mapping[str, Any],
                    doc: str, overwrite: bool = False) -> Registered:
  """Registers ``make(**options) -> Method`` (``options``: name -> default)."""
  if (name in METHODS or name in acq_lib.ACQUISITIONS) and not overwrite:
    raise ValueError(f"method {name!r} is already registered (pass overwrite=True)")
  entry = Registered(make=make, options=dict(options), doc=doc)
  METHODS[name] = entry
  return entry


def method_options(name: str) -> dict[str, Any]:
  """The options of a method or acquisition with their defaults."""
  if name in METHODS:
    return METHODS[name].options
  if name in acq_lib.ACQUISITIONS:
    return acq_lib.ACQUISITIONS[name].options
  raise ValueError(f"unknown method {name!r}; valid methods: {names()}")


def names() -> list[str]:
  """Every method and acquisition name."""
  return sorted(set(METHODS) | set(acq_lib.ACQUISITIONS))


def get_method(name: str, **options) -> Method:
  """A method by name with its options bound; every acquisition is also a method (one with
  no loss terms and no hooks). Unknown names and options raise ``ValueError``."""
  if name in METHODS:
    entry = METHODS[name]
    return entry.make(**acq_lib.check_options(name, options, entry.options))
  if name in acq_lib.ACQUISITIONS:
    return Method(name=name, acquisition=acq_lib.get_acquisition(name, **options))
  raise ValueError(f"unknown method {name!r}; valid methods: {names()}")


def split_options(options: Mapping[str, Any], own: Mapping[str, Any]):
  """``(own options, the rest)``: a method's own fields and those for its acquisition."""
  return ({k: v for k, v in options.items() if k in own},
          {k: v for k, v in options.items() if k not in own})


def combine(main: Method, *extra: Method) -> Method:
  """``main`` with the loss terms and hooks of ``extra`` training-only methods added."""
  for m in extra:
    if m.acquisition is not None:
      raise ValueError(f"{m.name!r} selects on its own; only training-only methods (mixup, "
                       "fixmatch, ceal, ...) can be added to another method")
  names_ = [h.name for m in (main, *extra) for h in m.hooks]
  if len(set(names_)) != len(names_):
    raise ValueError(f"methods {[m.name for m in (main, *extra)]} repeat a round hook")
  return main._replace(loss_terms=main.loss_terms + sum((m.loss_terms for m in extra), ()),
                       hooks=main.hooks + sum((m.hooks for m in extra), ()))
