"""CEAL pseudo-labels (Wang, Zhang, Li, Zhang & Lin 2016, "Cost-Effective Active Learning for
Deep Image Classification"), a training-only method added to any acquisition
(``--config.add_methods=ceal``).

After training, unlabeled points the model is very sure about — predictive entropy below
``δ_r = max(δ_0 - r · d, 0)`` — join that round's training with their predicted label, and every
model is fine-tuned from its trained weights on labeled + pseudo-labeled points. With an
ensemble the pseudo-labels come from the ensemble's mean prediction.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from dal_jax import semi
from dal_jax.methods._base import Method
from dal_jax.methods._base import RoundHook
from dal_jax.methods._base import register_method

OPTIONS = {"delta0": 0.05, "decay": 0.005}


def hook(config: semi.CEAL) -> RoundHook:
  def after_fit(states, ctx, variables):
    del states
    threshold = semi.ceal_threshold(config, ctx.round)
    lp = ctx.predict(variables, ctx.data.x_pool)  # [G, E, N, C]
    masks, labels = zip(*[semi.pseudo_labels(lp[g], threshold=threshold,
                                             where=~s.labeled)
                          for g, s in enumerate(ctx.states)])
    counts = [int(jnp.sum(m)) for m in masks]
    metrics = [{"num_pseudo_labels": c} for c in counts]
    if not any(counts):
      return variables, [None] * len(counts), metrics
    fit = ctx.fit(jnp.stack([jnp.where(m, lab, s.labels)
                             for m, lab, s in zip(masks, labels, ctx.states)]),
                  jnp.stack([s.trainable | m for m, s in zip(masks, ctx.states)]),
                  keys=ctx.model_keys([jax.random.fold_in(k, 1) for k in ctx.train_keys]),
                  init=variables)
    tuned = ctx.per_model(np.array(counts) > 0)  # seeds without pseudo-labels keep their model
    new = jax.tree.map(lambda a, b: jnp.where(tuned.reshape((-1,) + (1,) * (a.ndim - 1)), a, b),
                       fit.variables, variables)
    return new, [None] * len(counts), metrics

  return RoundHook(name="ceal", after_fit=after_fit, whole_pool=True)


def make(*, delta0: float = 0.05, decay: float = 0.005) -> Method:
  if not delta0 > 0 or decay < 0:
    raise ValueError(f"ceal needs delta0 > 0 and decay >= 0 (nats); got delta0={delta0}, "
                     f"decay={decay}")
  return Method(name="ceal", acquisition=None,
                hooks=(hook(semi.CEAL(delta0=float(delta0), decay=float(decay))),))


register_method("ceal", make, options=OPTIONS,
                doc="CEAL pseudo-labels for confident unlabeled points (Wang et al. 2016)")
