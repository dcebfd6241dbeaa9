"""LL4AL, learning loss for active learning (Yoo & Kweon 2019).

A loss-prediction module reads the model's intermediate features (``aux["features"]``): each map
is global-average-pooled, mapped by a dense layer + ReLU to ``width`` units, and the
concatenation goes through a dense layer to one predicted loss per example (the paper's Fig. 2).
It trains *with* the task model through a loss term, ``weight · margin_ranking_loss(predicted,
per-example cross-entropy)`` (pairs = batch halves, margin ξ), and its parameters are the term's
own (checkpointed with the model under warm start). The acquisition takes the largest predicted
losses.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from dal_jax import acquisition as acq_lib
from dal_jax import training
from dal_jax.acquisition import _learned
from dal_jax.methods._base import Method
from dal_jax.methods._base import register_method
from dal_jax.methods._base import split_options

OWN = {"weight": 1.0, "margin": 1.0, "width": 128, "detach_features": False}


class LossPredictionModule(nnx.Module):
  """GAP -> dense(width) -> ReLU per feature map, concatenated, dense -> one loss."""

  def __init__(self, feature_dims: tuple[int, ...], *, width: int = 128, rngs: nnx.Rngs):
    self.branches = nnx.List([nnx.Linear(d, width, rngs=rngs) for d in feature_dims])
    self.out = nnx.Linear(width * len(feature_dims), 1, rngs=rngs)

  def __call__(self, features):
    pooled = [f.mean(axis=tuple(range(1, f.ndim - 1))) if f.ndim > 2 else f for f in features]
    h = jnp.concatenate([nnx.relu(b(f)) for b, f in zip(self.branches, pooled)], axis=-1)
    return self.out(h)[:, 0]


@functools.lru_cache(maxsize=None)
def _graphdef(dims: tuple[int, ...], width: int):
  return nnx.graphdef(nnx.eval_shape(lambda: LossPredictionModule(dims, width=width,
                                                                   rngs=nnx.Rngs(0))))


def _feature_dims(model, x_example) -> tuple[int, ...]:
  variables = jax.eval_shape(model.init, jax.random.key(0), x_example)
  features = jax.eval_shape(lambda v: model.apply(v, x_example, train=False)[1].get("features"),
                            variables)
  if not features:
    raise ValueError("LL4AL needs a model whose aux holds 'features' (a tuple of intermediate "
                     "activations); the built-in models do")
  return tuple(int(f.shape[-1]) for f in features)


def loss_prediction_term(*, weight: float = 1.0, margin: float = 1.0, width: int = 128,
                         detach_features: bool = False) -> training.LossTerm:
  """The loss-prediction module as a loss term that also outputs ``predicted_loss``."""
  if weight < 0 or margin < 0 or int(width) < 1:
    raise ValueError(f"ll4al needs weight >= 0, margin >= 0 and width >= 1; got weight={weight}, "
                     f"margin={margin}, width={width}")
  width = int(width)

  def init(key, model, x_example):
    return nnx.state(LossPredictionModule(_feature_dims(model, x_example), width=width,
                                          rngs=nnx.Rngs(params=key)))

  def predict(params, features):
    dims = tuple(int(b["kernel"].value.shape[0]) for b in params["branches"].values())
    if detach_features:
      features = jax.tree.map(jax.lax.stop_gradient, features)
    return nnx.merge(_graphdef(dims, width), params)(features)

  def loss(params, out: training.StepOutputs):
    n = out.num_labeled
    predicted = predict(params, tuple(f[:n] for f in out.aux["features"]))
    rank = training.margin_ranking_loss(predicted, out.per_example, margin=margin)
    return weight * rank, {"ranking_loss": rank}

  return training.LossTerm(name="ll4al", loss=loss, init=init,
                           outputs=lambda params, aux: {"predicted_loss":
                                                        predict(params, aux["features"])})


def _score(state, outputs, *, key, where):
  del key
  return _learned.predicted_loss(outputs["predicted_loss"], where=where), state


def make(**options) -> Method:
  own, selection = split_options(options, OWN)
  acquisition = acq_lib.score_acquisition("ll4al", _score,
                                          acq_lib.Needs(outputs=("predicted_loss",)),
                                          **selection)
  return Method(name="ll4al", acquisition=acquisition,
                loss_terms=(loss_prediction_term(**{**OWN, **own}),))


register_method("ll4al", make, options={**acq_lib.SELECTION_OPTIONS, **OWN},
                doc="largest loss predicted by a module trained with the model (Yoo & Kweon 2019)")
