"""The acquisition registry: one name -> one uniform callable plus what it needs from the model.

The loop never dispatches on type: it asks the registry for an :class:`Acquisition`, computes the
model outputs it ``requires`` (``"log_probs"`` ``[S, N, C]``, ``"pre_logits"`` ``[N, D]``), and
calls :func:`acquire`.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple

import jax

from dal_jax.acquisition import _adversarial
from dal_jax.acquisition import _batchbald
from dal_jax.acquisition import _diversity
from dal_jax.acquisition import _learned
from dal_jax.acquisition import _scores
from dal_jax.acquisition import _selectors


class Acquisition(NamedTuple):
  """A registered acquisition.

  Attributes:
    name: registry name.
    fn: for ``returns == "scores"``: ``fn(inputs, *, key, where) -> [N]`` (higher = acquire);
      for ``returns == "indices"``: ``fn(inputs, *, key, where, k) -> [k]`` distinct indices.
    requires: what the function reads from ``inputs``: model outputs (``"log_probs"``,
      ``"pre_logits"``, ``"predicted_loss"``), the candidates' inputs ``"x"``, or ``"model"``
      (then ``inputs`` holds ``model``, ``variables`` and ``x``).
    returns: ``"scores"`` (combined with a selector) or ``"indices"`` (batch-aware methods).
    init_state: for acquisitions that train a network of their own (DAL, VAAL, WAAL):
      ``init_state(key, spec: Spec) -> method_state``. Their ``fn`` takes a keyword
      ``method_state`` and returns ``(scores or indices, new_method_state)``; the loop keeps the
      state in ``LoopState.method_state`` and checkpoints it.
  """

  name: str
  fn: Callable[..., Any]
  requires: tuple[str, ...]
  returns: str = "scores"
  init_state: Callable[..., Any] | None = None

  @property
  def stateful(self) -> bool:
    return self.init_state is not None


ACQUISITIONS: dict[str, Acquisition] = {}


def register(name: str, fn: Callable[..., Any], *, requires=("log_probs",),
             returns: str = "scores", init_state: Callable[..., Any] | None = None,
             overwrite: bool = False) -> Acquisition:
  """Adds an acquisition to the registry (see :class:`Acquisition` for ``fn``'s signature)."""
  if returns not in ("scores", "indices"):
    raise ValueError(f"returns must be 'scores' or 'indices', got {returns!r}")
  if name in ACQUISITIONS and not overwrite:
    raise ValueError(f"acquisition {name!r} is already registered (pass overwrite=True)")
  acq = Acquisition(name=name, fn=fn, requires=tuple(requires), returns=returns,
                    init_state=init_state)
  ACQUISITIONS[name] = acq
  return acq


def register_score(name: str, score_fn: Callable[..., jax.Array], *, requires=("log_probs",),
                   overwrite: bool = False) -> Acquisition:
  """Registers a plain score function ``score_fn(<required arrays...>, *, where=None) -> [N]``.

  Example::

    def max_prob_gap(log_probs, *, where=None): ...
    register_score("max_prob_gap", max_prob_gap)
  """

  def fn(inputs, *, key, where):
    del key
    return score_fn(*(inputs[r] for r in requires), where=where)

  return register(name, fn, requires=requires, overwrite=overwrite)


def get_acquisition(name: str) -> Acquisition:
  """Looks up an acquisition; unknown names raise ``ValueError`` listing the valid ones."""
  if name not in ACQUISITIONS:
    raise ValueError(f"unknown acquisition {name!r}; valid acquisitions: {sorted(ACQUISITIONS)}")
  return ACQUISITIONS[name]


def acquire(acquisition: Acquisition | str, inputs: Mapping[str, jax.Array], *, key: jax.Array,
            k: int, where: jax.Array | None = None, selector: str = "top_k",
            beta: float = 1.0) -> jax.Array:
  """Selects ``k`` distinct candidate indices with a (stateless) acquisition.

  Args:
    acquisition: an :class:`Acquisition` or its registered name.
    inputs: model outputs, at least those in ``acquisition.requires``.
    key: PRNG key (split between scoring and selection).
    k: batch size (static).
    where: ``[N]`` candidate mask (``~labeled``).
    selector: ``top_k`` / ``power`` / ``softmax`` / ``softrank`` for score acquisitions.
    beta: temperature of the stochastic selectors.

  Returns:
    ``[k]`` int32 pool indices.
  """
  acq = get_acquisition(acquisition) if isinstance(acquisition, str) else acquisition
  if acq.stateful:
    raise ValueError(f"acquisition {acq.name!r} trains a network of its own; call "
                     "acquire_with_state(..., method_state=...)")
  return acquire_with_state(acq, inputs, key=key, k=k, where=where, selector=selector,
                            beta=beta, method_state=None)[0]


def acquire_with_state(acquisition: Acquisition | str, inputs: Mapping[str, jax.Array], *,
                       key: jax.Array, k: int, where: jax.Array | None = None,
                       selector: str = "top_k", beta: float = 1.0,
                       method_state: Any = None,
                       options: Mapping[str, Any] | None = None) -> tuple[jax.Array, Any]:
  """:func:`acquire` for any acquisition, stateful ones included.

  ``options`` are hyper-parameters of a learned acquisition (fields of ``DALConfig``,
  ``VAALConfig``, ``WAALConfig``), e.g. ``{"steps": 100, "beta": 2.0}``.

  Returns:
    ``([k] int32 indices, method_state)``: the acquisition's updated state (``method_state``
    unchanged for stateless acquisitions).
  """
  acq = get_acquisition(acquisition) if isinstance(acquisition, str) else acquisition
  needed = [r for r in acq.requires if r != "model"] + (
      ["model", "variables", "x"] if "model" in acq.requires else [])
  missing = [r for r in needed if r not in inputs]
  if missing:
    raise ValueError(f"acquisition {acq.name!r} requires model outputs {missing}; got "
                     f"{sorted(inputs)}")
  if acq.stateful and method_state is None:
    raise ValueError(f"acquisition {acq.name!r} needs its method_state "
                     f"(Acquisition.init_state(key, spec))")
  score_key, select_key = jax.random.split(key)
  if options and not acq.stateful:
    raise ValueError(f"acquisition {acq.name!r} takes no options; got {dict(options)}")
  extra = {"method_state": method_state, **(options or {})} if acq.stateful else {}
  if acq.returns == "indices":
    out = acq.fn(inputs, key=key, where=where, k=k, **extra)
  else:
    out = acq.fn(inputs, key=score_key, where=where, **extra)
  out, method_state = out if acq.stateful else (out, method_state)
  if acq.returns == "indices":
    return out, method_state
  return _selectors.get_selector(selector)(select_key, out, k, beta=beta), method_state

for _name, _fn in [
    ("entropy", _scores.predictive_entropy),
    ("least_confidence", _scores.least_confidence),
    ("margin", _scores.margin),
    ("variation_ratios", _scores.variation_ratios),
    ("mean_std", _scores.mean_std),
    ("bald", _scores.bald),
    ("vote_entropy", _scores.vote_entropy),
    ("consensus_kl", _scores.consensus_kl),
]:
  register_score(_name, _fn)


def _random_fn(inputs, *, key, where):
  if where is not None:
    n = where.shape[0]
  elif "log_probs" in inputs:
    n = inputs["log_probs"].shape[1]
  else:
    raise ValueError("random acquisition needs `where` (the candidate mask) or log_probs to know "
                     "the pool size")
  return _scores.random_scores(key, n, where=where)


# Random sampling needs no model output: the loop skips pool inference for it.
register("random", _random_fn, requires=())


# ---- batch-aware acquisitions (return indices) and gradient-length scores ----

def _batchbald_fn(inputs, *, key, where, k):
  return _batchbald.batchbald(inputs["log_probs"], k, key=key, where=where).indices


def _badge_fn(inputs, *, key, where, k):
  return _diversity.badge(key, inputs["log_probs"], inputs["pre_logits"], k, where=where)


def _coreset_fn(inputs, *, key, where, k):
  return _diversity.coreset(key, inputs["pre_logits"], k, where=where)


def _kmeans_fn(inputs, *, key, where, k):
  return _diversity.kmeans_select(key, inputs["pre_logits"], k, where=where)


def _dmbal_fn(inputs, *, key, where, k):
  return _diversity.dmbal(key, inputs["log_probs"], inputs["pre_logits"], k, where=where)


def _cluster_margin_fn(inputs, *, key, where, k):
  return _diversity.cluster_margin(key, inputs["log_probs"], inputs["pre_logits"], k, where=where)


def _umr_fn(inputs, *, key, where, k):
  del key
  return _diversity.uncertainty_minus_redundancy(inputs["log_probs"], inputs["pre_logits"], k,
                                                 where=where)


def _kdpp_fn(inputs, *, key, where, k):
  return _diversity.kdpp(key, inputs["log_probs"], inputs["pre_logits"], k, where=where)


_EMB = ("log_probs", "pre_logits")
register("batchbald", _batchbald_fn, requires=("log_probs",), returns="indices")
register("badge", _badge_fn, requires=_EMB, returns="indices")
register("coreset", _coreset_fn, requires=("pre_logits",), returns="indices")
register("kmeans", _kmeans_fn, requires=("pre_logits",), returns="indices")
register("dmbal", _dmbal_fn, requires=_EMB, returns="indices")
register("cluster_margin", _cluster_margin_fn, requires=_EMB, returns="indices")
register("umr", _umr_fn, requires=_EMB, returns="indices")
register("kdpp", _kdpp_fn, requires=_EMB, returns="indices")
register_score("egl", _diversity.expected_gradient_length, requires=_EMB)
register_score("entropy_gradnorm", _diversity.entropy_gradnorm, requires=_EMB)


def _dfal_fn(inputs, *, key, where):
  del key
  return _adversarial.dfal_scores(inputs["model"], inputs["variables"], inputs["x"], where=where)


register("dfal", _dfal_fn, requires=("model",))


# ---- acquisitions that train a network of their own (method state in the loop state) ----

def _options(config_type, options) -> Any:
  """A learned acquisition's config NamedTuple from user options (lists become tuples)."""
  bad = sorted(set(options) - set(config_type._fields))
  if bad:
    raise ValueError(f"unknown {config_type.__name__} options {bad}; valid options: "
                     f"{list(config_type._fields)}")
  return config_type(**{k: tuple(v) if isinstance(v, list) else v for k, v in options.items()})


# LL4AL: the loss-prediction module is part of the model (models.with_loss_prediction), trained
# with it; the loop asks the model for aux["predicted_loss"].
register_score("ll4al", _learned.predicted_loss, requires=("predicted_loss",))


def _dal_fn(inputs, *, key, where, k, method_state, **options):
  return _learned.dal(key, inputs["pre_logits"], k, where=where, method_state=method_state,
                      config=_options(_learned.DALConfig, options))


def _vaal_fn(inputs, *, key, where, method_state, **options):
  return _learned.vaal(key, inputs["x"], where=where, method_state=method_state,
                       config=_options(_learned.VAALConfig, options))


def _ta_vaal_fn(inputs, *, key, where, method_state, **options):
  return _learned.ta_vaal(key, inputs["x"], inputs["predicted_loss"], where=where,
                          method_state=method_state,
                          config=_options(_learned.VAALConfig, options))


def _waal_fn(inputs, *, key, where, method_state, **options):
  return _learned.waal(key, inputs["log_probs"], inputs["pre_logits"], where=where,
                       method_state=method_state, config=_options(_learned.WAALConfig, options))


def _init_with_options(init, config_type):
  def init_state(key, spec, **options):
    return init(key, spec, _options(config_type, options))
  return init_state


register("dal", _dal_fn, requires=("pre_logits",), returns="indices",
         init_state=_init_with_options(_learned.dal_init, _learned.DALConfig))
register("vaal", _vaal_fn, requires=("x",),
         init_state=_init_with_options(_learned.vaal_init, _learned.VAALConfig))
register("ta_vaal", _ta_vaal_fn, requires=("x", "predicted_loss"),
         init_state=_init_with_options(_learned.ta_vaal_init, _learned.VAALConfig))
register("waal", _waal_fn, requires=_EMB,
         init_state=_init_with_options(_learned.waal_init, _learned.WAALConfig))
