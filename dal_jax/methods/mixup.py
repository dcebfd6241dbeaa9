"""Mixup (Zhang et al. 2018, "mixup: Beyond Empirical Risk Minimization"), a training-only
method added to any acquisition (``--config.add_methods=mixup``).

Each batch is mixed: ``λ ~ Beta(α, α)``, ``x̃ = λ x + (1 - λ) x[π]`` for a random permutation π,
and the task loss becomes ``λ L(f(x̃), y) + (1 - λ) L(f(x̃), y[π])`` (the term wraps the task's
loss, so it mixes any task's labels).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dal_jax import training
from dal_jax.methods._base import Method
from dal_jax.methods._base import register_method

OPTIONS = {"alpha": 0.4}


def loss_term(alpha: float) -> training.LossTerm:
  """Mixup as a loss term (it only transforms the batch; its own loss is 0)."""
  if not alpha > 0:
    raise ValueError(f"mixup alpha must be > 0, got {alpha}")

  def prepare(batch: training.Batch, key, *, teacher) -> training.Batch:
    del teacher
    lam_key, perm_key = jax.random.split(key)
    lam = jax.random.beta(lam_key, alpha, alpha)
    perm = jax.random.permutation(perm_key, batch.x.shape[0])
    return batch._replace(x=lam * batch.x + (1.0 - lam) * batch.x[perm],
                          extras={**batch.extras, "mixup_lam": lam, "mixup_perm": perm})

  def wrap(task_loss, batch: training.Batch):
    lam, perm = batch.extras["mixup_lam"], batch.extras["mixup_perm"]
    return lambda logits, y: lam * task_loss(logits, y) + (1.0 - lam) * task_loss(logits, y[perm])

  return training.LossTerm(name="mixup", loss=lambda params, out: (jnp.zeros(()), {}),
                           prepare=prepare, wrap=wrap)


def make(*, alpha: float = OPTIONS["alpha"]) -> Method:
  return Method(name="mixup", acquisition=None, loss_terms=(loss_term(float(alpha)),))


register_method("mixup", make, options=OPTIONS,
                doc="mixup augmentation in training (Zhang et al. 2018); add to any acquisition")
