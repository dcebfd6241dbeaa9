"""Region queries for segmentation: the annotator labels square windows of an image, not whole
images, and the budget counts labeled pixels.

An image of ``H x W`` pixels is a grid of ``(H / r) x (W / r)`` windows of ``r x r`` pixels.
A window's score is the reduction (:func:`dal_jax.acquisition.reduce_scores`: mean, max, sum,
top-q mean) of a per-pixel score over its pixels; a window any of whose pixels is labeled
already is not a candidate. :func:`select_windows` picks the best windows one by one, and once a
window is picked its eight neighbours in the same image are passed over for the rest of the round
(the non-maximum masking of Xie et al. 2022, RIPU, §3.2), so a batch is not a block of adjacent
windows on one uncertain object; it turns to masked windows only when no other is left.

:func:`ripu` is RIPU's per-pixel score: the *region impurity* of a pixel — the entropy of the
predicted classes in its ``k x k`` neighbourhood, high on boundaries between classes — times its
predictive entropy (Xie, Yuan, Li, Liu & Cheng, "Towards Fewer Annotations: Active Learning via
Region Impurity and Prediction Uncertainty for Domain Adaptive Semantic Segmentation", CVPR 2022).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from dal_jax.acquisition import _reduce
from dal_jax.acquisition import _scores


def grid(shape: tuple[int, ...], size: int) -> tuple[int, int]:
  """``(rows, columns)`` of ``size x size`` windows tiling an ``[H, W]`` image; raises when
  ``size`` does not divide H and W."""
  if len(shape) != 2:
    raise ValueError(f"region queries need images with [H, W] labels, got label shape {shape}")
  h, w = shape
  if not (isinstance(size, (int, np.integer)) and size >= 1 and h % size == 0 and w % size == 0):
    raise ValueError(f"region_size={size!r} must be an integer >= 1 dividing the image's "
                     f"{h}x{w} pixels")
  return h // size, w // size


def window_box(window: int, rows_cols: tuple[int, int], size: int) -> tuple[int, int, int, int]:
  """``(top, left, bottom, right)`` pixels of window ``window`` (row-major; exclusive ends)."""
  r, c = divmod(int(window), rows_cols[1])
  return r * size, c * size, (r + 1) * size, (c + 1) * size


def window_scores(scores: ArrayLike, asked: ArrayLike, size: int, *, reduction: str = "mean",
                  q: float = 0.1) -> jax.Array:
  """``[N, H, W]`` pixel scores -> ``[N, G]`` window scores (row-major windows of ``size x
  size``): the reduction of each window's pixel scores; ``-inf`` for a window with a pixel in
  ``asked`` ``[N, H, W]`` (labeled already)."""
  scores, asked = jnp.asarray(scores), jnp.asarray(asked, bool)
  if scores.ndim != 3 or asked.shape != scores.shape:
    raise ValueError(f"window scores need [N, H, W] pixel scores and an asked mask of that "
                     f"shape, got {scores.shape} and {asked.shape}")
  gh, gw = grid(tuple(scores.shape[1:]), size)
  n = scores.shape[0]

  def windows(a):
    return a.reshape(n, gh, size, gw, size).transpose(0, 1, 3, 2, 4).reshape(n * gh * gw, -1)

  reduced = _reduce.reduce_scores(windows(scores), reduction=reduction, q=q)
  taken = jnp.any(windows(asked), axis=1)
  return jnp.where(taken, -jnp.inf, reduced).reshape(n, gh * gw)


def select_windows(scores: ArrayLike, k: int, rows_cols: tuple[int, int], *,
                   suppress: bool = True) -> tuple[np.ndarray, np.ndarray]:
  """The ``k`` windows to label: ``(items [k], windows [k])``, best first.

  Windows are taken by descending score (ties: the lower item, then the lower window); with
  ``suppress``, a taken window's eight neighbours in its image are skipped while any candidate
  that is not a neighbour is left. ``-inf`` windows are never taken.
  """
  s = np.asarray(scores, np.float64)
  n, g = s.shape
  k = _scores.count(k)
  order = np.lexsort((np.arange(n * g), -s.reshape(-1)))  # descending score, then position
  order = order[np.isfinite(s.reshape(-1)[order]) | (s.reshape(-1)[order] > 0)]
  if len(order) < k:
    raise ValueError(f"only {len(order)} windows can still be labeled, fewer than k={k}")
  taken = np.zeros(n * g, bool)
  masked = np.zeros(n * g, bool)
  chosen = []
  rows, cols = rows_cols
  for _ in range(k):
    pick = next((u for u in order if not taken[u] and not masked[u]), None)
    if pick is None:  # every remaining window neighbours a taken one
      pick = next(u for u in order if not taken[u])
    taken[pick] = True
    chosen.append(pick)
    if suppress:
      item, w = divmod(int(pick), g)
      r, c = divmod(w, cols)
      for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
          if 0 <= r + dr < rows and 0 <= c + dc < cols:
            masked[item * g + (r + dr) * cols + c + dc] = True
  chosen = np.asarray(chosen, np.int64)
  return chosen // g, chosen % g


def region_impurity(log_probs: ArrayLike, *, neighbourhood: int = 3) -> jax.Array:
  """``[S, N, H, W, C] -> [N, H, W]``: the entropy of the predicted-class histogram (argmax of
  the mean prediction) over each pixel's ``neighbourhood x neighbourhood`` window (its pixels
  inside the image)."""
  log_probs = _scores.validate_log_probs(log_probs, per_element=True)
  if log_probs.ndim != 5:
    raise ValueError(f"region impurity needs [S, N, H, W, C] log-probs of images, got shape "
                     f"{log_probs.shape}")
  c = log_probs.shape[-1]
  pred = jnp.argmax(_scores.mean_log_probs(log_probs), axis=-1)
  one_hot = jax.nn.one_hot(pred, c, dtype=jnp.float32)
  window = (1, neighbourhood, neighbourhood, 1)
  box = lambda a: jax.lax.reduce_window(a, 0.0, jax.lax.add, window, (1, 1, 1, 1),  # noqa: E731
                                        "SAME")
  counts = box(one_hot)
  total = box(jnp.ones_like(one_hot[..., :1]))
  p = counts / total
  return -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), axis=-1)


def ripu(log_probs: ArrayLike, *, where: ArrayLike | None = None) -> jax.Array:
  """RIPU (Xie et al. 2022): region impurity × predictive entropy of each pixel.

  Args:
    log_probs: ``[S, N, H, W, C]`` per-pixel log-probabilities of images.
    where: optional ``[N, H, W]`` pixel mask.

  Returns:
    ``[N, H, W]`` scores (``-inf`` outside ``where``); reduced per window or image by the
    acquisition's ``reduction``.
  """
  log_probs = _scores.validate_log_probs(log_probs, per_element=True)
  if log_probs.ndim != 5:
    raise ValueError(f"ripu scores pixels of images: it needs [S, N, H, W, C] log-probs (a "
                     f"segmentation model's), got shape {log_probs.shape}")
  where = _scores.validate_where(where, log_probs.shape[1:-1])
  score = region_impurity(log_probs) * _scores.predictive_entropy(log_probs)
  return _scores.apply_where(score, where)


# ---- superpixels (Cai et al. 2021)


def superpixels(images: np.ndarray, size: int, *, compactness: float = 0.1) -> np.ndarray:
  """``[N, H, W, C]`` images in [0, 1] -> ``[N, H, W]`` int32 SLIC superpixels (Achanta et al.
  2012, scikit-image's ``slic``), about ``H·W / size²`` per image (so one is about as large as
  a ``size x size`` window), numbered ``0 .. S_i - 1`` in each image.

  Cai, Xu, Zhang, Yu, Hu & Hua, "Revisiting Superpixels for Active Learning in Semantic
  Segmentation with Realistic Annotation Costs" (CVPR 2021) query superpixels instead of
  windows: their pixels are likely of one class, so a labeled region is less often split
  across objects. ``compactness`` trades colour against position (scikit-image's default for
  images in [0, 1] intensity is small; larger values give squarer regions).
  """
  from skimage.segmentation import slic

  images = np.asarray(images, np.float64)
  if images.ndim != 4:
    raise ValueError(f"superpixels need [N, H, W, C] images, got shape {images.shape}")
  n, h, w, _ = images.shape
  if not (isinstance(size, (int, np.integer)) and 1 <= size <= min(h, w)):
    raise ValueError(f"region_size={size!r} must be an integer in [1, {min(h, w)}]")
  count = max(1, (h * w) // (size * size))
  out = np.empty((n, h, w), np.int32)
  for i in range(n):
    seg = slic(images[i], n_segments=count, compactness=compactness, channel_axis=-1,
               start_label=0, enforce_connectivity=True)
    out[i] = np.unique(seg, return_inverse=True)[1].reshape(h, w)
  return out


def segment_scores(scores: ArrayLike, segments: ArrayLike, asked: ArrayLike, *,
                   reduction: str = "mean", q: float = 0.1) -> np.ndarray:
  """``[N, H, W]`` pixel scores -> ``[N, S]`` float64 superpixel scores (S: the most
  superpixels of an image): the reduction of each superpixel's pixel scores; ``-inf`` for a
  superpixel with a pixel in ``asked`` and for numbers an image does not use."""
  s = np.asarray(scores, np.float64)
  seg = np.asarray(segments)
  a = np.asarray(asked, bool)
  if s.ndim != 3 or seg.shape != s.shape or a.shape != s.shape:
    raise ValueError(f"superpixel scores need [N, H, W] pixel scores, superpixels and an asked "
                     f"mask of one shape, got {s.shape}, {seg.shape} and {a.shape}")
  if reduction not in _reduce.REDUCTIONS:
    raise ValueError(f"unknown reduction {reduction!r}; valid: {list(_reduce.REDUCTIONS)}")
  n = s.shape[0]
  width = int(seg.max()) + 1 if seg.size else 0
  flat = (np.arange(n)[:, None] * width + seg.reshape(n, -1)).reshape(-1)
  values = s.reshape(-1)
  count = np.bincount(flat, minlength=n * width)
  taken = np.bincount(flat, weights=a.reshape(-1).astype(np.float64), minlength=n * width) > 0
  if reduction in ("mean", "sum"):
    out = np.bincount(flat, weights=values, minlength=n * width)
    if reduction == "mean":
      out = out / np.maximum(count, 1)
  elif reduction == "max":
    out = np.full(n * width, -np.inf)
    np.maximum.at(out, flat, values)
  else:
    out = np.full(n * width, -np.inf)
    order = np.lexsort((-values, flat))  # by superpixel, then descending score
    starts = np.concatenate([[0], np.cumsum(count)[:-1]])
    for u in np.nonzero(count)[0]:
      top = values[order[starts[u]:starts[u] + count[u]]]
      out[u] = top[:max(1, int(np.ceil(round(q * count[u], 9))))].mean()
  out = np.where((count == 0) | taken, -np.inf, out)
  return out.reshape(n, width)


def select_segments(scores: ArrayLike, k: int, *, sizes: ArrayLike | None = None,
                    pixels: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """The best superpixels, ``(items [m], superpixels [m])``, by descending score (ties: the
  lower item, then the lower number); ``-inf`` ones are never taken. ``m = k``, or with
  ``sizes`` ``[N, S]`` (pixels of each) and a pixel allowance ``pixels``, fewer: the taking
  stops once the taken superpixels hold ``pixels`` pixels (the last one may pass it)."""
  s = np.asarray(scores, np.float64)
  k = _scores.count(k)
  flat = s.reshape(-1)
  order = np.lexsort((np.arange(flat.size), -flat))
  order = order[np.isfinite(flat[order])]
  if pixels is not None:
    held = np.cumsum(np.asarray(sizes).reshape(-1)[order])
    order = order[:int(np.searchsorted(held, pixels)) + 1]
  elif len(order) < k:
    raise ValueError(f"only {len(order)} superpixels can still be labeled, fewer than k={k}")
  chosen = order[:k]
  return chosen // s.shape[1], chosen % s.shape[1]
