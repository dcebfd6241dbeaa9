"""DFAL (Ducoffe & Precioso 2018, "Adversarial Active Learning for Deep Networks: a Margin Based
Approach"): acquire the points with the smallest DeepFool perturbation that flips the prediction
(Moosavi-Dezfooli et al. 2016); with ``adversarial_training`` every selected point's adversarial
copy ``x + r`` also joins training with the point's label once it is known.

The copies live in fixed-capacity slots of the method's state (capacity = the budget), so the
training set keeps its shape: ``x [budget, ...]``, ``y [budget]`` (-1 until labeled, or for
out-of-distribution points) and ``source [budget]`` (the pool position, -1 for a free slot).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from dal_jax import acquisition as acq_lib
from dal_jax.acquisition import _adversarial
from dal_jax.methods._base import Method
from dal_jax.methods._base import RoundHook
from dal_jax.methods._base import register_method
from dal_jax.methods._base import split_options

OWN = {"adversarial_training": False, "max_iter": 20}


def adversarial_copies() -> RoundHook:
  def init(key, setup):
    del key
    cap = setup.budget
    return {"x": jnp.zeros((cap, *setup.x_example.shape[1:]), jnp.float32),
            "y": jnp.full((cap,), -1, jnp.int32), "source": jnp.full((cap,), -1, jnp.int32)}

  def after_select(state, ctx, variables, selected):
    free = np.nonzero(np.asarray(state["source"]) < 0)[0]
    if len(free) < len(selected):
      raise ValueError(f"no room for {len(selected)} adversarial examples ({len(free)} free "
                       "slots); the budget bounds them")
    x = ctx.pool_inputs(selected)
    x_adv = x + _adversarial.deepfool_perturbation(ctx.learner.model, variables["model"], x)
    slots = free[:len(selected)]
    return {**state, "x": state["x"].at[slots].set(x_adv.astype(state["x"].dtype)),
            "source": state["source"].at[slots].set(jnp.asarray(selected, jnp.int32))}

  def after_answers(state, selected, labels):
    source = np.asarray(state["source"])
    y = np.asarray(state["y"]).copy()
    for i, label in zip(selected, labels):
      y[source == i] = label if label >= 0 else -1
    return {**state, "y": jnp.asarray(y)}

  return RoundHook(name="dfal_copies", init=init, train_extra=lambda s: (s["x"], s["y"]),
                   after_select=after_select, after_answers=after_answers)


def make(**options) -> Method:
  own, selection = split_options(options, OWN)
  own = {**OWN, **own}
  max_iter = int(own["max_iter"])
  if max_iter < 1:
    raise ValueError(f"dfal max_iter must be >= 1, got {max_iter}")

  def score(state, outputs, *, key, where):
    del key
    return _adversarial.dfal_scores(outputs["model"], outputs["variables"], outputs["x"],
                                    where=where, max_iter=max_iter), state

  acquisition = acq_lib.score_acquisition("dfal", score, acq_lib.Needs(model=True), **selection)
  return Method(name="dfal", acquisition=acquisition,
                hooks=(adversarial_copies(),) if own["adversarial_training"] else ())


register_method("dfal", make, options={**acq_lib.SELECTION_OPTIONS, **OWN},
                doc="smallest DeepFool perturbation (Ducoffe & Precioso 2018); "
                    "adversarial_training adds the copies to training")
