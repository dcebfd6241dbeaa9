"""FixMatch-style consistency on the unlabeled pool (Sohn et al. 2020), a training-only method
added to any acquisition (``--config.add_methods=fixmatch``).

The model in inference mode labels a weak view (random shift) of unlabeled pool inputs; where its
confidence reaches τ, the strong view (larger shift, cutout of half the side as in DeVries &
Taylor 2017, noise) is trained towards that label with weight λ_u. Labeled and strong unlabeled
inputs share one forward pass.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from dal_jax import training
from dal_jax.methods._base import Method
from dal_jax.methods._base import register_method

OPTIONS = {"weight": 1.0, "ratio": 1, "threshold": 0.95}


def _translate(key, x, max_shift: int):
  """Random translations of images ``[B, H, W, C]`` by up to ``max_shift`` pixels (edge padding)."""
  b, h, w, _ = x.shape
  padded = jnp.pad(x, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)),
                   mode="edge")
  shifts = jax.random.randint(key, (b, 2), 0, 2 * max_shift + 1)
  return jax.vmap(lambda img, s: jax.lax.dynamic_slice(img, (s[0], s[1], 0),
                                                       (h, w, x.shape[-1])))(padded, shifts)


def weak_augment(key: jax.Array, x: jax.Array) -> jax.Array:
  """The weak view: a random translation of up to 1/8 of the image side (images), or small
  Gaussian noise (other inputs)."""
  if x.ndim == 4 and x.shape[1] >= 8:
    return _translate(key, x, max(1, x.shape[1] // 8))
  return x + 0.05 * jax.random.normal(key, x.shape, x.dtype)


def strong_augment(key: jax.Array, x: jax.Array) -> jax.Array:
  """The strong view: a larger translation (1/4 of the side), cutout of a random square of half
  the side and Gaussian noise; noise only for non-image inputs."""
  k1, k2, k3 = jax.random.split(key, 3)
  noise = 0.1 * jax.random.normal(k3, x.shape, x.dtype)
  if x.ndim != 4 or x.shape[1] < 8:
    return x + noise
  x = _translate(k1, x, max(1, x.shape[1] // 4))
  b, h, w, _ = x.shape
  size = h // 2
  corner = jax.random.randint(k2, (b, 2), 0, jnp.array([h - size + 1, w - size + 1]))
  rows, cols = jnp.arange(h)[None, :], jnp.arange(w)[None, :]
  inside = (((rows >= corner[:, :1]) & (rows < corner[:, :1] + size))[:, :, None]
            & ((cols >= corner[:, 1:]) & (cols < corner[:, 1:] + size))[:, None, :])
  return jnp.where(inside[..., None], 0.0, x) + noise


def loss_term(weight: float, ratio: int, threshold: float) -> training.LossTerm:
  if not weight > 0 or int(ratio) < 1 or not 0.0 <= threshold <= 1.0:
    raise ValueError(f"fixmatch needs weight > 0, ratio >= 1 and threshold in [0, 1]; got "
                     f"weight={weight}, ratio={ratio}, threshold={threshold}")

  def prepare(batch: training.Batch, key, *, teacher) -> training.Batch:
    weak_key, strong_key = jax.random.split(key)
    probs = jax.nn.softmax(teacher(weak_augment(weak_key, batch.xu)))
    return batch._replace(xu=strong_augment(strong_key, batch.xu), extras={
        **batch.extras, "pseudo": jnp.argmax(probs, -1),
        "confident": (jnp.max(probs, -1) >= threshold).astype(jnp.float32)})

  def loss(params, out: training.StepOutputs):
    del params
    n, e = out.num_labeled, out.batch.extras
    unsup = jnp.mean(e["confident"] * optax.softmax_cross_entropy_with_integer_labels(
        out.logits[n:], e["pseudo"]))
    return weight * unsup, {"unlabeled_loss": unsup, "pseudo_label_rate": jnp.mean(e["confident"])}

  return training.LossTerm(name="fixmatch", loss=loss, prepare=prepare,
                           unlabeled_ratio=int(ratio))


def make(*, weight: float = 1.0, ratio: int = 1, threshold: float = 0.95) -> Method:
  return Method(name="fixmatch", acquisition=None,
                loss_terms=(loss_term(float(weight), int(ratio), float(threshold)),))


register_method("fixmatch", make, options=OPTIONS,
                doc="FixMatch-style consistency on unlabeled pool points (Sohn et al. 2020)")
