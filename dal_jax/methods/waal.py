"""WAAL (Shui et al. 2020, "Deep Active Learning: Unified and Principled Method for Query and
Training"): query and training.

* Query: ``selection · c(h) - ½(‖log p‖₂ + ‖log p‖₁)`` with a critic ``c`` on the pre-logits
  trained on the Wasserstein objective with a one-sided gradient penalty (the acquisition's
  state; ``dal_jax.acquisition.waal``).
* Training (``alpha > 0``): a second critic φ on pre-logits, a loss term of the model. With
  ``W(φ, h) = E_U[c_φ(h)] - E_L[c_φ(h)]`` the step adds ``alpha · W(sg φ, h) - (W(φ, sg h) -
  λ · GP)``, so one descent step trains the representation to shrink the labeled/unlabeled
  Wasserstein estimate and the critic to maximise it (``sg`` = stop-gradient; GP is the one-sided
  penalty on interpolates, Petzka et al. 2018).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dal_jax import acquisition as acq_lib
from dal_jax import training
from dal_jax.acquisition import _learned
from dal_jax.methods._base import Method
from dal_jax.methods._base import register_method
from dal_jax.methods._base import split_options

NEEDS = acq_lib.Needs(log_probs=True, pre_logits=True)
OWN = {"alpha": 0.0, "train_gradient_penalty": 10.0, "critic_hidden": (128,)}


def alignment_term(*, alpha: float, gradient_penalty: float = 10.0,
                   hidden: tuple[int, ...] = (128,)) -> training.LossTerm:
  """WAAL's adversarial alignment of labeled and unlabeled representations."""
  if not alpha > 0 or gradient_penalty < 0:
    raise ValueError(f"waal training needs alpha > 0 and train_gradient_penalty >= 0; got "
                     f"alpha={alpha}, train_gradient_penalty={gradient_penalty}")
  hidden = tuple(int(h) for h in hidden)

  def sizes(dim):
    return (dim, *hidden, 1)

  def init(key, model, x_example):
    variables = jax.eval_shape(model.init, jax.random.key(0), x_example)
    pre = jax.eval_shape(lambda v: model.apply(v, x_example, train=False)[1]["pre_logits"],
                         variables)
    return _learned._mlp(sizes(int(pre.shape[-1])))[0](key)

  def loss(phi, out: training.StepOutputs):
    n, h = out.num_labeled, out.aux["pre_logits"]
    apply = _learned._mlp(sizes(h.shape[-1]))[1]

    def critic(p, x):
      return jax.nn.sigmoid(apply(p, x)[:, 0])

    def wasserstein(p, hl, hu):
      return jnp.mean(critic(p, hu)) - jnp.mean(critic(p, hl))

    sg = jax.lax.stop_gradient
    w_task = wasserstein(sg(phi), h[:n], h[n:])
    hl, hu = sg(h[:n]), sg(h[n:])
    m = min(n, hu.shape[0])
    t = jax.random.uniform(out.key, (m, 1))
    mix = hl[:m] + t * (hu[:m] - hl[:m])
    grads = jax.vmap(jax.grad(lambda hi: critic(phi, hi[None])[0]))(mix)
    gp = jnp.mean(jnp.maximum(jnp.sqrt(jnp.sum(grads**2, -1) + 1e-12) - 1.0, 0.0) ** 2)
    w_critic = wasserstein(phi, hl, hu)
    return alpha * w_task - (w_critic - gradient_penalty * gp), {"wasserstein": w_critic}

  return training.LossTerm(name="waal", loss=loss, init=init, unlabeled_ratio=1)


def make(**options) -> Method:
  own, rest = split_options(options, OWN)
  own = {**OWN, **own}
  acquisition = _learned.learned_acquisition("waal", _learned.WAALConfig, _learned.waal_init,
                                    _learned.waal, NEEDS, batch=False, **rest)
  terms = ()
  if own["alpha"]:
    terms = (alignment_term(alpha=float(own["alpha"]),
                            gradient_penalty=float(own["train_gradient_penalty"]),
                            hidden=tuple(own["critic_hidden"])),)
  return Method(name="waal", acquisition=acquisition, loss_terms=terms)


register_method("waal", make, options={**acq_lib.SELECTION_OPTIONS,
                                       **_learned.WAALConfig._field_defaults, **OWN},
                doc="Wasserstein critic + uncertainty query; alpha > 0 adds WAAL's adversarial "
                    "training (Shui et al. 2020)")
