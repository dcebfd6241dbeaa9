"""Flax NNX models behind a pure ``init`` / ``apply`` pair.

Every model in dal_jax (and any model a user brings) is a :class:`Model`: a NamedTuple of two pure
functions,

* ``init(key, x) -> variables`` where ``variables = {"params": ..., <other collections>}``;
* ``apply(variables, x, *, train, mc=False, key=None) -> (logits [B, C], aux)`` where
  ``aux["pre_logits"]`` is the ``[B, D]`` penultimate representation. With ``train=True`` dropout
  is on, batch-norm uses batch statistics and ``aux["updates"]`` holds the new non-parameter
  collections (e.g. ``{"batch_stats": ...}``). With ``train=False, mc=True`` dropout is on (MC
  dropout, Gal & Ghahramani 2016) while batch-norm stays in inference mode. The built-in models
  also return ``aux["features"]``, a tuple of intermediate activations (``[B, H, W, C]`` or
  ``[B, D]``) that LL4AL's loss-prediction module reads (``dal_jax.methods.ll4al``). ``aux``
  holds arrays only.

The NNX modules are used functionally (``nnx.split`` at the boundary, ``nnx.merge`` inside the
jitted code), so nothing stateful crosses a ``jit`` boundary.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

Variables = dict[str, Any]


class Model(NamedTuple):
  """A pure model: ``init(key, x) -> variables``; ``apply(variables, x, *, train, mc, key)``."""

  init: Callable[..., Variables]
  apply: Callable[..., tuple[jax.Array, dict[str, jax.Array]]]


class MCDropout(nnx.Module):
  """Dropout for training and for MC-dropout inference.

  Training draws an independent mask per example. MC inference (``mc=True``) draws one mask per
  forward pass, shared by every example in the batch ("consistent MC dropout", Kirsch et al. 2019):
  with the same S keys for every pool chunk, sample s is one fixed sub-network applied to the
  whole pool, which joint-acquisition methods (BatchBALD) require and which costs S masks instead
  of S x N of them.
  """

  def __init__(self, rate: float, *, fold: bool = True):
    self.independent = nnx.Dropout(rate)
    self.consistent = nnx.Dropout(rate, broadcast_dims=(0,))
    self.fold = fold  # False: apply the same consistent masks to the activations (for checks)

  def __call__(self, x, *, train: bool, mc: bool, rngs=None):
    if train:
      return self.independent(x, deterministic=False, rngs=rngs)
    if mc:
      return self.consistent(x, deterministic=False, rngs=rngs)
    return x

  def linear(self, x, layer: nnx.Linear, *, train: bool, mc: bool, rngs=None):
    """``layer(dropout(x))`` for ``x [B, D]``.

    With a consistent MC mask ``m`` (one per forward pass), ``(x ⊙ m / q) W = x (diag(m / q) W)``:
    the mask is folded into the kernel, so under ``vmap`` over S dropout keys the S masked copies
    of the activations (``[S, B, D]``) are never formed; XLA computes one ``[B, D] x [D, S·H]``
    product instead.
    """
    if train or not mc:
      return layer(self(x, train=train, mc=mc, rngs=rngs))
    keep = 1.0 - self.consistent.rate
    if keep == 1.0:
      return layer(x)
    mask = jax.random.bernoulli(rngs.dropout(), keep, (x.shape[-1],))
    if not self.fold:
      return layer(jnp.where(mask, x / keep, 0.0))
    kernel = jnp.where(mask[:, None], layer.kernel.value / keep, 0.0)
    out = x @ kernel
    return out if layer.bias is None else out + layer.bias.value

  def conv(self, x, layer: nnx.Conv, *, train: bool, mc: bool, rngs=None):
    """``layer(channel_dropout(x))`` for ``x [B, H, W, C]``: whole channels are dropped (the
    spatial dropout of the BatchBALD paper's MNIST model), independently per example in training;
    in MC inference one channel mask per forward pass, folded into the kernel's input channels
    (``conv(x ⊙ m / q) = conv with kernel[..., c, :] · m_c / q``, exact since convolution is
    linear)."""
    keep = 1.0 - self.consistent.rate
    if (not train and not mc) or keep == 1.0:
      return layer(x)
    if train:
      mask = jax.random.bernoulli(rngs.dropout(), keep, (x.shape[0], 1, 1, x.shape[-1]))
      return layer(jnp.where(mask, x / keep, 0.0))
    mask = jax.random.bernoulli(rngs.dropout(), keep, (x.shape[-1],))
    if not self.fold:
      return layer(jnp.where(mask, x / keep, 0.0))
    kernel = jnp.where(mask[:, None], layer.kernel.value / keep, 0.0)  # [..., C_in, C_out]
    out = jax.lax.conv_general_dilated(
        x, kernel, layer.strides if isinstance(layer.strides, tuple) else (layer.strides,) * 2,
        layer.padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return out if layer.bias is None else out + layer.bias.value


class MLP(nnx.Module):
  """Flatten -> [Dense -> ReLU -> Dropout] x len(hidden) -> Dense."""

  def __init__(self, in_features: int, num_classes: int, *, hidden=(256, 128),
               dropout: float = 0.5, rngs: nnx.Rngs):
    sizes = (in_features, *hidden)
    self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])
    self.dropout = MCDropout(dropout)
    self.head = nnx.Linear(sizes[-1], num_classes, rngs=rngs)

  def __call__(self, x, *, train: bool, mc: bool, rngs=None):
    h = nnx.relu(self.layers[0](x.reshape(x.shape[0], -1)))
    features = [h]
    for layer in list(self.layers)[1:]:
      h = nnx.relu(self.dropout.linear(h, layer, train=train, mc=mc, rngs=rngs))
      features.append(h)
    logits = self.dropout.linear(h, self.head, train=train, mc=mc, rngs=rngs)
    return logits, {"pre_logits": h, "features": tuple(features)}


class GalCNN(nnx.Module):
  """The MC-dropout CNN of Gal, Islam & Ghahramani 2017 ("Deep Bayesian Active Learning with
  Image Data"): conv(32, 4x4) - ReLU - conv(32, 4x4) - ReLU - maxpool(2) - dropout(0.25) -
  dense(128) - ReLU - dropout(0.5) - dense(C)."""

  def __init__(self, in_channels: int, spatial: tuple[int, int], num_classes: int, *,
               filters: int = 32, hidden: int = 128, dropout: tuple[float, float] = (0.25, 0.5),
               conv_dropout: float = 0.0, fold_masks: bool = True, rngs: nnx.Rngs):
    """``conv_dropout`` > 0 adds channel dropout between the convolutions (as in the BatchBALD
    paper's MNIST model, which drops out after each convolution); ``fold_masks=False`` applies
    consistent MC masks to the activations instead of folding them into the next kernel (the
    same function; for checks)."""
    if not 0.0 <= conv_dropout < 1.0:
      raise ValueError(f"conv_dropout must be in [0, 1), got {conv_dropout}")
    self.conv1 = nnx.Conv(in_channels, filters, (4, 4), padding="VALID", rngs=rngs)
    self.conv2 = nnx.Conv(filters, filters, (4, 4), padding="VALID", rngs=rngs)
    h, w = ((spatial[0] - 6) // 2, (spatial[1] - 6) // 2)
    if h < 1 or w < 1:
      raise ValueError(f"GalCNN needs images of at least 8x8 pixels, got {spatial}")
    self.drop_conv = MCDropout(conv_dropout, fold=fold_masks)
    self.drop1 = MCDropout(dropout[0], fold=fold_masks)
    self.dense = nnx.Linear(h * w * filters, hidden, rngs=rngs)
    self.drop2 = MCDropout(dropout[1], fold=fold_masks)
    self.head = nnx.Linear(hidden, num_classes, rngs=rngs)

  def __call__(self, x, *, train: bool, mc: bool, rngs=None):
    h1 = nnx.relu(self.conv1(x))
    h2 = self.drop_conv.conv(h1, self.conv2, train=train, mc=mc, rngs=rngs)
    h2 = nnx.max_pool(nnx.relu(h2), (2, 2), strides=(2, 2))
    h = nnx.relu(self.drop1.linear(h2.reshape(h2.shape[0], -1), self.dense, train=train, mc=mc,
                                   rngs=rngs))
    logits = self.drop2.linear(h, self.head, train=train, mc=mc, rngs=rngs)
    return logits, {"pre_logits": h, "features": (h1, h2, h)}


class KirschCNN(nnx.Module):
  """The MC-dropout MNIST CNN of Kirsch, van Amersfoort & Gal 2019 (BatchBALD, §5.1):
  conv(32, 5x5) - dropout - maxpool(2) - ReLU - conv(64, 5x5) - dropout - maxpool(2) - ReLU -
  dense(128) - ReLU - dropout - dense(C), with channel (2-D) dropout after the convolutions.

  Channel dropout commutes with max-pooling and ReLU (a channel is scaled by 0 or 1/q), so the
  first one is applied as the second convolution's input dropout (folded into its kernel under
  consistent MC masks); the second is applied to the pooled ``[B, h, w, 64]`` activations.
  """

  def __init__(self, in_channels: int, spatial: tuple[int, int], num_classes: int, *,
               filters: tuple[int, int] = (32, 64), kernel: int = 5, hidden: int = 128,
               dropout: float = 0.5, rngs: nnx.Rngs):
    k = kernel
    h, w = ((spatial[0] - k + 1) // 2 - k + 1) // 2, ((spatial[1] - k + 1) // 2 - k + 1) // 2
    if h < 1 or w < 1:
      raise ValueError(f"KirschCNN with {k}x{k} kernels needs images of at least "
                       f"{3 * k - 1}x{3 * k - 1} pixels, got {spatial}")
    self.conv1 = nnx.Conv(in_channels, filters[0], (k, k), padding="VALID", rngs=rngs)
    self.conv2 = nnx.Conv(filters[0], filters[1], (k, k), padding="VALID", rngs=rngs)
    self.drop_conv1 = MCDropout(dropout)
    self.drop_conv2 = MCDropout(dropout)
    self.dense = nnx.Linear(h * w * filters[1], hidden, rngs=rngs)
    self.drop_dense = MCDropout(dropout)
    self.head = nnx.Linear(hidden, num_classes, rngs=rngs)

  def _channel_dropout(self, x, *, train: bool, mc: bool, rngs=None):
    keep = 1.0 - self.drop_conv2.consistent.rate
    if (not train and not mc) or keep == 1.0:
      return x
    shape = (x.shape[0], 1, 1, x.shape[-1]) if train else (x.shape[-1],)
    mask = jax.random.bernoulli(rngs.dropout(), keep, shape)
    return jnp.where(mask, x / keep, 0.0)

  def __call__(self, x, *, train: bool, mc: bool, rngs=None):
    h1 = nnx.relu(nnx.max_pool(self.conv1(x), (2, 2), strides=(2, 2)))
    h2 = self.drop_conv1.conv(h1, self.conv2, train=train, mc=mc, rngs=rngs)
    h2 = nnx.relu(nnx.max_pool(h2, (2, 2), strides=(2, 2)))
    h2 = self._channel_dropout(h2, train=train, mc=mc, rngs=rngs)
    h = nnx.relu(self.dense(h2.reshape(h2.shape[0], -1)))
    logits = self.drop_dense.linear(h, self.head, train=train, mc=mc, rngs=rngs)
    return logits, {"pre_logits": h, "features": (h1, h2, h)}


class _BasicBlock(nnx.Module):

  def __init__(self, cin: int, cout: int, stride: int, *, rngs: nnx.Rngs):
    self.conv1 = nnx.Conv(cin, cout, (3, 3), strides=stride, use_bias=False, rngs=rngs)
    self.bn1 = nnx.BatchNorm(cout, momentum=0.9, rngs=rngs)
    self.conv2 = nnx.Conv(cout, cout, (3, 3), use_bias=False, rngs=rngs)
    self.bn2 = nnx.BatchNorm(cout, momentum=0.9, rngs=rngs)
    self.project = stride != 1 or cin != cout
    if self.project:
      self.shortcut = nnx.Conv(cin, cout, (1, 1), strides=stride, use_bias=False, rngs=rngs)
      self.bn_sc = nnx.BatchNorm(cout, momentum=0.9, rngs=rngs)

  def __call__(self, x, *, train: bool):
    h = nnx.relu(self.bn1(self.conv1(x), use_running_average=not train))
    h = self.bn2(self.conv2(h), use_running_average=not train)
    sc = x if not self.project else self.bn_sc(self.shortcut(x), use_running_average=not train)
    return nnx.relu(h + sc)


class ResNet18(nnx.Module):
  """ResNet-18 (He et al. 2016) with the CIFAR stem (3x3 conv, no max-pool), and dropout before
  the classifier so MC dropout applies. ``width`` scales the channels (64 in the paper)."""

  def __init__(self, in_channels: int, num_classes: int, *, width: int = 64,
               blocks=(2, 2, 2, 2), dropout: float = 0.3, rngs: nnx.Rngs):
    self.stem = nnx.Conv(in_channels, width, (3, 3), use_bias=False, rngs=rngs)
    self.bn = nnx.BatchNorm(width, momentum=0.9, rngs=rngs)
    layers, cin = [], width
    for stage, n in enumerate(blocks):
      cout = width * 2**stage
      for i in range(n):
        layers.append(_BasicBlock(cin, cout, 2 if (i == 0 and stage > 0) else 1, rngs=rngs))
        cin = cout
    self.blocks = nnx.List(layers)
    self.dropout = MCDropout(dropout)
    self.head = nnx.Linear(cin, num_classes, rngs=rngs)

  def __call__(self, x, *, train: bool, mc: bool, rngs=None):
    h = nnx.relu(self.bn(self.stem(x), use_running_average=not train))
    features = []
    for i, block in enumerate(self.blocks):
      h = block(h, train=train)
      if i + 1 == len(self.blocks) or self.blocks[i + 1].project:  # end of a stage
        features.append(h)
    h = jnp.mean(h, axis=(1, 2))
    logits = self.dropout.linear(h, self.head, train=train, mc=mc, rngs=rngs)
    return logits, {"pre_logits": h, "features": tuple(features)}


class UNet(nnx.Module):
  """A small U-Net (Ronneberger, Fischer & Brox 2015) for semantic segmentation: per-pixel logits
  ``[B, H, W, C]``.

  ``depth`` encoder levels of two 3x3 convolutions (``width · 2^level`` channels) and a 2x2
  max-pool, a bottleneck, and as many decoder levels: a 2x2 transposed convolution up, the
  encoder's features of that level concatenated (the skip connection), channel dropout (MC
  dropout: in inference with ``mc=True`` one channel mask per forward pass, folded into the next
  kernel as in :meth:`MCDropout.conv`), two 3x3 convolutions; then a 1x1 convolution to the C
  classes. ``aux["pre_logits"]`` is the last decoder level's features averaged over the pixels
  (one embedding per image, for diversity methods); ``aux["pixel_features"]`` keeps them per
  pixel. H and W must be multiples of ``2^depth``.
  """

  def __init__(self, in_channels: int, spatial: tuple[int, int], num_classes: int, *,
               width: int = 16, depth: int = 2, dropout: float = 0.25, rngs: nnx.Rngs):
    if spatial[0] % 2**depth or spatial[1] % 2**depth:
      raise ValueError(f"unet with depth={depth} needs H and W that are multiples of "
                       f"{2**depth}, got {spatial}")
    conv = functools.partial(nnx.Conv, kernel_size=(3, 3), padding="SAME", rngs=rngs)
    self.down = nnx.List([])
    cin = in_channels
    for level in range(depth):
      c = width * 2**level
      self.down.append(nnx.List([conv(cin, c), conv(c, c)]))
      cin = c
    c = width * 2**depth
    self.bottom = nnx.List([conv(cin, c), conv(c, c)])
    self.up, self.up_convs = nnx.List([]), nnx.List([])
    for level in reversed(range(depth)):
      skip = width * 2**level
      self.up.append(nnx.ConvTranspose(c, skip, (2, 2), strides=(2, 2), rngs=rngs))
      self.up_convs.append(nnx.List([conv(2 * skip, skip), conv(skip, skip)]))
      c = skip
    self.dropout = MCDropout(dropout)
    self.head = nnx.Conv(c, num_classes, (1, 1), rngs=rngs)

  def __call__(self, x, *, train: bool, mc: bool, rngs=None):
    skips, h = [], x
    for first, second in self.down:
      h = nnx.relu(second(nnx.relu(first(h))))
      skips.append(h)
      h = nnx.max_pool(h, (2, 2), strides=(2, 2))
    h = nnx.relu(self.bottom[1](nnx.relu(self.bottom[0](h))))
    features = [h]
    for up, (first, second), skip in zip(self.up, self.up_convs, reversed(skips)):
      h = jnp.concatenate([up(h), skip], axis=-1)
      h = nnx.relu(self.dropout.conv(h, first, train=train, mc=mc, rngs=rngs))
      h = nnx.relu(second(h))
      features.append(h)
    logits = self.head(h)
    return logits, {"pre_logits": jnp.mean(h, axis=(1, 2)), "pixel_features": h,
                    "features": tuple(features)}


class CenterNet(nnx.Module):
  """A small anchor-free detector in the manner of CenterNet (Zhou et al. 2019) for
  :mod:`dal_jax.tasks.detection`: outputs ``[B, H/4, W/4, C + 5]`` (``C + 1`` class logits with
  background first, then the box regressions ``dy, dx, log h, log w``).

  Backbone: a 3x3 convolution, two stride-2 stages (``width · 2`` and ``width · 4`` channels)
  and two dilated 3x3 convolutions (dilation 2 and 4) that widen the receptive field to ~70
  pixels at stride 4. Head: channel dropout (MC dropout in inference with ``mc=True``, folded
  into the kernel as in :meth:`MCDropout.conv`), a 3x3 convolution and a 1x1 convolution. The
  background logit starts at ``background_bias`` so that the first steps predict background
  almost everywhere (CenterNet's prior on its heatmap bias, in softmax form).
  ``aux["pre_logits"]`` is the head's features averaged over the cells (an image embedding for
  diversity methods) and ``aux["box_regression"]`` the regression channels. H and W must be
  multiples of 4.
  """

  def __init__(self, in_channels: int, spatial: tuple[int, int], num_classes: int, *,
               width: int = 16, dropout: float = 0.25, background_bias: float = 4.0,
               rngs: nnx.Rngs):
    if spatial[0] % 4 or spatial[1] % 4:
      raise ValueError(f"centernet needs H and W that are multiples of 4 (its output stride), "
                       f"got {spatial}")
    conv = functools.partial(nnx.Conv, kernel_size=(3, 3), padding="SAME", rngs=rngs)
    w1, w2, w4 = width, 2 * width, 4 * width
    self.backbone = nnx.List([
        conv(in_channels, w1), conv(w1, w2, strides=(2, 2)), conv(w2, w2),
        conv(w2, w4, strides=(2, 2)), conv(w4, w4, kernel_dilation=(2, 2)),
        conv(w4, w4, kernel_dilation=(4, 4))])
    self.dropout = MCDropout(dropout)
    self.neck = conv(w4, w4)
    self.head = nnx.Conv(w4, num_classes + 5, (1, 1), rngs=rngs)
    self.head.bias.value = self.head.bias.value.at[0].set(background_bias)

  def __call__(self, x, *, train: bool, mc: bool, rngs=None):
    h = x
    for layer in self.backbone:
      h = nnx.relu(layer(h))
    h = nnx.relu(self.dropout.conv(h, self.neck, train=train, mc=mc, rngs=rngs))
    out = self.head(h)
    return out, {"pre_logits": jnp.mean(h, axis=(1, 2)), "box_regression": out[..., -4:]}


def from_nnx(make_module: Callable[[nnx.Rngs], nnx.Module]) -> Model:
  """Wraps an NNX module into a pure :class:`Model`.

  Args:
    make_module: ``rngs -> module``; the module's ``__call__(x, *, train, mc, rngs)`` returns
      ``(logits, {"pre_logits": h, ...})`` (use :class:`MCDropout` for dropout layers).

  Returns:
    A :class:`Model` whose variables are ``{"params": nnx.State, "batch_stats": nnx.State}``.
  """
  abstract = nnx.eval_shape(lambda: make_module(nnx.Rngs(0)))
  graphdef, _, _, rest = nnx.split(abstract, nnx.Param, nnx.BatchStat, ...)
  if jax.tree.leaves(rest):
    raise ValueError("dal_jax models may hold only nnx.Param and nnx.BatchStat state; "
                     f"found {rest}")

  def init(key: jax.Array, x: jax.Array) -> Variables:
    del x  # shapes are fixed at construction
    module = make_module(nnx.Rngs(params=key))
    _, params, batch_stats, _ = nnx.split(module, nnx.Param, nnx.BatchStat, ...)
    return {"params": params, "batch_stats": batch_stats}

  def apply(variables: Variables, x: jax.Array, *, train: bool, mc: bool = False,
            key: jax.Array | None = None):
    use_dropout = train or mc
    if use_dropout and key is None:
      raise ValueError("apply(train=True or mc=True) needs a dropout `key`")
    # copy=True: fresh Variables at this trace level, so batch-norm may update its statistics
    # inside jax.grad (Variables arriving from an outer trace cannot be mutated there).
    module = nnx.merge(graphdef, variables["params"], variables["batch_stats"], rest, copy=True)
    rngs = nnx.Rngs(dropout=key) if use_dropout else None
    logits, aux = module(x, train=train, mc=mc and not train, rngs=rngs)
    aux = dict(aux)
    if train:
      _, _, new_stats, _ = nnx.split(module, nnx.Param, nnx.BatchStat, ...)
      aux["updates"] = {"batch_stats": new_stats}
    return logits, aux

  return Model(init=init, apply=apply)


class DenseStack(nnx.Module):
  """Dense layers with ReLU between them (the last layer is linear): ``[B, sizes[0]] ->
  [B, sizes[-1]]``. The small auxiliary networks (WAAL's critic, DAL's classifier, VAAL's VAE
  and discriminator) are built from it."""

  def __init__(self, sizes: tuple[int, ...], *, rngs: nnx.Rngs):
    self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])

  def __call__(self, h):
    for layer in list(self.layers)[:-1]:
      h = nnx.relu(layer(h))
    return self.layers[-1](h)


def _input_geometry(input_shape) -> tuple[int, int, int]:
  if len(input_shape) != 3:
    raise ValueError(f"image models need inputs shaped [H, W, C], got {tuple(input_shape)}")
  return tuple(int(s) for s in input_shape)  # type: ignore[return-value]


def _mlp(input_shape, num_classes, **kw) -> Model:
  size = 1
  for s in input_shape:
    size *= int(s)
  return from_nnx(lambda rngs: MLP(size, num_classes, rngs=rngs, **kw))


def _gal_cnn(input_shape, num_classes, **kw) -> Model:
  h, w, c = _input_geometry(input_shape)
  return from_nnx(lambda rngs: GalCNN(c, (h, w), num_classes, rngs=rngs, **kw))


def _kirsch_cnn(input_shape, num_classes, **kw) -> Model:
  h, w, c = _input_geometry(input_shape)
  return from_nnx(lambda rngs: KirschCNN(c, (h, w), num_classes, rngs=rngs, **kw))


def _resnet18(input_shape, num_classes, **kw) -> Model:
  _, _, c = _input_geometry(input_shape)
  return from_nnx(lambda rngs: ResNet18(c, num_classes, rngs=rngs, **kw))


def _unet(input_shape, num_classes, **kw) -> Model:
  h, w, c = _input_geometry(input_shape)
  return from_nnx(lambda rngs: UNet(c, (h, w), num_classes, rngs=rngs, **kw))


def _centernet(input_shape, num_classes, **kw) -> Model:
  h, w, c = _input_geometry(input_shape)
  return from_nnx(lambda rngs: CenterNet(c, (h, w), num_classes, rngs=rngs, **kw))


MODELS: dict[str, Callable[..., Model]] = {}
# Each registered model's factory and options with their defaults.
MODEL_OPTIONS: dict[str, tuple[Callable[..., Model], dict[str, Any]]] = {}


def keyword_defaults(fn) -> dict[str, Any]:
  """The keyword-only arguments of ``fn`` that have defaults (``rngs`` excluded)."""
  return {p.name: p.default for p in inspect.signature(fn).parameters.values()
          if p.kind == p.KEYWORD_ONLY and p.name != "rngs" and p.default is not p.empty}


def register_model(name: str, factory: Callable[..., Model], *,
                   options: dict[str, Any] | None = None,
                   checks: dict[str, tuple[Callable[[Any], bool], str]] | None = None,
                   overwrite: bool = False) -> Callable[..., Model]:
  """Registers ``factory(input_shape, num_classes, **options) -> Model`` under ``name``.

  ``options``: the options and their defaults (``config.models.<name>``; default: the factory's
  keyword-only arguments with defaults); ``checks``: ``{option: (check, what is allowed)}``
  applied by :func:`get_model`. A second registration of a name is refused unless
  ``overwrite``. (A factory put into ``MODELS`` directly works too; its options are its keyword
  arguments.)
  """
  if name in MODELS and not overwrite:
    raise ValueError(f"model {name!r} is already registered; pass overwrite=True to replace it")
  MODELS[name] = factory
  MODEL_OPTIONS[name] = (factory, dict(keyword_defaults(factory) if options is None else options))
  if checks:
    OPTION_CHECKS[name] = dict(checks)
  return factory


def model_options(name: str) -> dict[str, Any]:
  """A registered model's options with their defaults; an unknown name raises naming the valid
  ones."""
  if name not in MODELS:
    raise ValueError(f"unknown model {name!r}; valid models: {sorted(MODELS)}")
  factory, options = MODEL_OPTIONS.get(name, (None, None))
  return dict(options) if factory is MODELS[name] else keyword_defaults(MODELS[name])


def _rate(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v < 1.0


def _is_real(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)


def _count(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def _counts(v, length=None) -> bool:
  return (isinstance(v, (tuple, list)) and len(v) >= 1 and all(_count(x) for x in v)
          and (length is None or len(v) == length))


# What each built-in model's options allow: (check, what is allowed).
OPTION_CHECKS: dict[str, dict[str, tuple[Callable[[Any], bool], str]]] = {
    "mlp": {"hidden": (_counts, "a non-empty tuple of layer widths >= 1"),
            "dropout": (_rate, "a dropout rate in [0, 1)")},
    "gal_cnn": {"filters": (_count, "an integer >= 1"), "hidden": (_count, "an integer >= 1"),
                "dropout": (lambda v: isinstance(v, (tuple, list)) and len(v) == 2
                            and all(_rate(x) for x in v),
                            "two dropout rates in [0, 1): (after the convolutions, before the "
                            "head)"),
                "conv_dropout": (_rate, "a dropout rate in [0, 1)"),
                "fold_masks": (lambda v: isinstance(v, bool), "True or False")},
    "kirsch_cnn": {"filters": (lambda v: _counts(v, 2), "two channel counts >= 1"),
                   "kernel": (_count, "an integer >= 1"), "hidden": (_count, "an integer >= 1"),
                   "dropout": (_rate, "a dropout rate in [0, 1)")},
    "resnet18": {"width": (_count, "an integer >= 1"),
                 "blocks": (lambda v: _counts(v, 4), "four block counts >= 1"),
                 "dropout": (_rate, "a dropout rate in [0, 1)")},
    "unet": {"width": (_count, "an integer >= 1"),
             "depth": (lambda v: _count(v) and v <= 6, "an integer in [1, 6]"),
             "dropout": (_rate, "a dropout rate in [0, 1)")},
    "centernet": {"width": (_count, "an integer >= 1"),
                  "dropout": (_rate, "a dropout rate in [0, 1)"),
                  "background_bias": (lambda v: _is_real(v), "a finite number")},
}


register_model("mlp", _mlp, options=keyword_defaults(MLP.__init__), checks=OPTION_CHECKS["mlp"])
register_model("gal_cnn", _gal_cnn, options=keyword_defaults(GalCNN.__init__),
               checks=OPTION_CHECKS["gal_cnn"])
register_model("kirsch_cnn", _kirsch_cnn, options=keyword_defaults(KirschCNN.__init__),
               checks=OPTION_CHECKS["kirsch_cnn"])
register_model("resnet18", _resnet18, options=keyword_defaults(ResNet18.__init__),
               checks=OPTION_CHECKS["resnet18"])
register_model("unet", _unet, options=keyword_defaults(UNet.__init__),
               checks=OPTION_CHECKS["unet"])
register_model("centernet", _centernet, options=keyword_defaults(CenterNet.__init__),
               checks=OPTION_CHECKS["centernet"])


def check_options(name: str, options: dict[str, Any]) -> None:
  """Raises ``ValueError`` naming the first option of a built-in model outside its range."""
  for key, value in options.items():
    check = OPTION_CHECKS.get(name, {}).get(key)
    if check is not None and not check[0](value):
      raise ValueError(f"config.models.{name}.{key}={value!r} is not allowed: expected "
                       f"{check[1]}")


def get_model(name: str, input_shape, num_classes: int, **kwargs) -> Model:
  """Builds a registered model by name (see :func:`_get_model`); the same arguments give the
  same :class:`Model` object, so compiled programs are reused across runs in one process."""
  if name not in MODELS:
    raise ValueError(f"unknown model {name!r}; valid models: {sorted(MODELS)}")
  kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
  check_options(name, kwargs)
  try:
    return _get_model(name, tuple(int(s) for s in input_shape), int(num_classes),
                      tuple(sorted(kwargs.items())))
  except TypeError as e:
    raise ValueError(f"model {name!r}: {e}") from None


@functools.lru_cache(maxsize=64)
def _get_model(name: str, input_shape, num_classes: int, kwargs) -> Model:
  """Builds a registered model by name.

  Args:
    name: one of ``MODELS`` (``mlp``, ``gal_cnn``, ``resnet18``).
    input_shape: shape of one example, e.g. ``(28, 28, 1)``.
    num_classes: number of output classes C.
    **kwargs: model hyper-parameters (``hidden``, ``dropout``, ``width``, ...).

  Raises:
    ValueError: for an unknown name.
  """
  return MODELS[name](input_shape, num_classes, **dict(kwargs))
