"""Pools larger than memory: items read in chunks from ``array_record`` files and scored chunk by
chunk, so that only O(N) numbers (a score and a flag per item) are ever held for the pool.

A pool on disk is ``PATH.array_record`` (one record per item: its ``[H, W, C]`` uint8 bytes)
and ``PATH.json`` (the item shape). :class:`RecordPool` reads any set of items by index (random
access through ``array_record``'s data source, the reader Grain is built on) and iterates over
chunks; :func:`stream_scores` runs a learner's (MC-dropout / ensemble) predictions over the
chunks and reduces each chunk to its ``[chunk]`` scores at once, never ``[S, N, C]`` for the
pool. Selection then works on the ``[N]`` scores (``acquisition.top_k`` and the stochastic
selectors), and the selected items' inputs are gathered by index.

A :class:`RecordPool` (and any :class:`Rows` view of it) stands where an ``[N, H, W, C]`` array
would: ``pool.shape``, ``pool[a:b]`` and ``pool[positions]`` are views that read nothing until
:func:`materialize` (or ``np.asarray``) asks for their values. The learner's predictions read a
view chunk by chunk, and with several processes each process reads only the rows of its own
devices (``jax.make_array_from_callback``); the loop (:mod:`dal_jax.loop`) trains on the labeled
items gathered by index and scores the pool chunk by chunk when ``LoopData.x_pool`` is one
(``config.pool_on_disk``). ``benchmarks/pool_streaming.py`` measures it on 10^6 items.
"""

from __future__ import annotations

import json
import os
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np


STORED = {"uint8": np.uint8, "float32": np.float32}


def write_pool(path: str, chunks, *, shape: tuple[int, ...], dtype: str = "uint8",
               meta: dict | None = None) -> int:
  """Writes items to ``path.array_record`` (+ ``path.json``) from an iterable of ``[k, *shape]``
  chunks; returns the item count.

  ``dtype="uint8"``: chunks of uint8 intensities, read back as ``value / 255`` (images);
  ``"float32"``: chunks of float32 values, read back as they are. ``meta``: more entries for
  ``path.json`` (e.g. a digest of the content), read back as ``RecordPool.meta``.
  """
  from array_record.python import array_record_module

  if dtype not in STORED:
    raise ValueError(f"dtype must be one of {sorted(STORED)}, got {dtype!r}")
  shape = tuple(int(s) for s in shape)
  writer = array_record_module.ArrayRecordWriter(path + ".array_record", "group_size:256")
  n = 0
  try:
    for chunk in chunks:
      chunk = np.asarray(chunk)
      if chunk.dtype != STORED[dtype] or chunk.shape[1:] != shape:
        raise ValueError(f"pool chunks must be {dtype} [k, {', '.join(map(str, shape))}], got "
                         f"{chunk.dtype} {chunk.shape}")
      for item in chunk:
        writer.write(item.tobytes())
      n += len(chunk)
  finally:
    writer.close()
  with open(path + ".json", "w") as f:
    json.dump({**(meta or {}), "shape": list(shape), "items": n, "dtype": dtype}, f)
  return n


class Rows:
  """Rows of a pool on disk at ``positions`` (any integer array): shape ``[*positions.shape,
  *item_shape]``. Indexing gives another view; :meth:`numpy` reads the values (float32), each
  distinct item once. ``pool`` is anything with ``item_shape`` and ``read(positions)``: a
  :class:`RecordPool`, or a project's decoded images (``dal_jax.pool.DecodedImages``)."""

  dtype = np.dtype(np.float32)

  def __init__(self, pool, positions):
    self.pool, self.positions = pool, np.asarray(positions, np.int64)

  @property
  def shape(self) -> tuple[int, ...]:
    return (*self.positions.shape, *self.pool.item_shape)

  @property
  def ndim(self) -> int:
    return len(self.shape)

  def __len__(self) -> int:
    return self.shape[0]

  def __getitem__(self, key) -> "Rows":
    if isinstance(key, tuple) and len(key) > self.positions.ndim:
      raise IndexError("a view of pool rows is indexed on its position axes only")
    if hasattr(key, "shape") and not isinstance(key, np.ndarray):  # a JAX index array
      key = np.asarray(key)
    return Rows(self.pool, self.positions[key])

  def numpy(self) -> np.ndarray:
    flat = self.positions.reshape(-1)
    unique, inverse = np.unique(flat, return_inverse=True)
    values = self.pool.read(unique)[inverse]
    return values.reshape(self.shape)

  def __array__(self, dtype=None, copy=None):
    del copy
    values = self.numpy()
    return values if dtype is None else values.astype(dtype)


class RecordPool(Rows):
  """A pool on disk: ``len(pool)``, ``pool.read(indices) -> [k, H, W, C] float32``,
  ``pool.chunks(size)`` -> ``(start, [size, H, W, C])`` in order; as a :class:`Rows` view,
  ``pool.shape`` is ``(N, H, W, C)`` and ``pool[...]`` reads nothing until asked."""

  def __init__(self, path: str):
    from array_record.python import array_record_data_source

    try:
      with open(path + ".json") as f:
        meta = json.load(f)
      self.item_shape = tuple(int(s) for s in meta["shape"])
      self.stored = meta.get("dtype", "uint8")
      if self.stored not in STORED:
        raise ValueError(self.stored)
    except (OSError, ValueError, KeyError, TypeError) as e:
      raise ValueError(f"{path}.json: not a pool written by dal_jax.streaming.write_pool "
                       f"({type(e).__name__})") from None
    if not os.path.exists(path + ".array_record"):
      raise ValueError(f"{path}.array_record does not exist")
    self.path, self.meta = path, meta
    self.source = array_record_data_source.ArrayRecordDataSource([path + ".array_record"])
    if len(self.source) != meta.get("items"):
      raise ValueError(f"{path}.array_record holds {len(self.source)} items, its .json says "
                       f"{meta.get('items')}: the files do not belong together")
    super().__init__(self, np.arange(len(self.source)))

  def __len__(self) -> int:
    return len(self.source)

  def read(self, indices) -> np.ndarray:
    indices = [int(i) for i in np.asarray(indices).reshape(-1)]
    if not indices:
      return np.zeros((0, *self.item_shape), np.float32)
    if not 0 <= min(indices) <= max(indices) < len(self):
      raise ValueError(f"item indices must be in [0, {len(self)})")
    raw = self.source.__getitems__(indices)
    out = np.frombuffer(b"".join(raw), STORED[self.stored]).reshape(len(indices),
                                                                     *self.item_shape)
    return out.astype(np.float32) / 255.0 if self.stored == "uint8" else out.copy()

  def chunks(self, size: int) -> Iterator[tuple[int, np.ndarray]]:
    if size < 1:
      raise ValueError(f"chunk size must be >= 1, got {size}")
    for start in range(0, len(self), size):
      yield start, self.read(range(start, min(start + size, len(self))))


def is_rows(x) -> bool:
  """Whether ``x`` is a view of a pool on disk (not an array in memory)."""
  return isinstance(x, Rows)


def materialize(x):
  """The values of a :class:`Rows` view (NumPy); any other ``x`` unchanged."""
  return x.numpy() if isinstance(x, Rows) else x


def rows_block(x, index: tuple[slice, ...], *, axis: int, start: int, chunk: int) -> np.ndarray:
  """The block ``index`` (a ``jax.make_array_from_callback`` index into a ``chunk``-long slab
  of ``x`` from ``start`` along ``axis``, rows past the end zero) read from a view: only the rows
  that block needs."""
  n = x.shape[axis]
  want = index[axis]
  lo, hi = want.start or 0, chunk if want.stop is None else want.stop
  prefix = tuple(index[:axis])
  real = x[prefix + (slice(start + lo, min(start + hi, n)),)].numpy()
  rest = tuple(index[axis + 1:])
  real = real[(slice(None),) * (axis + 1) + rest] if rest else real
  if real.shape[axis] < hi - lo:
    pad = [(0, 0)] * real.ndim
    pad[axis] = (0, hi - lo - real.shape[axis])
    real = np.pad(real, pad)
  return real


def stream_scores(learner, variables, pool: RecordPool,
                  score: Callable[..., jax.Array], *, where: np.ndarray | None = None,
                  key: jax.Array | None = None, mc_samples: int = 0,
                  chunk_size: int = 1024) -> np.ndarray:
  """``[N]`` float32 scores of a pool on disk, chunk by chunk.

  Args:
    learner: a :class:`dal_jax.learner.Learner`.
    variables: its stacked variables (M models).
    pool: the :class:`RecordPool`.
    score: a score function ``score(log_probs [S', n, C], *, where) -> [n]`` (``dal_jax.
      acquisition.bald``, ``entropy``, ...); it sees the M models' samples as ``S' = M·S``.
    where: ``[N]`` bool candidates (``~labeled``); others score ``-inf``.
    key: dropout key (``[M]`` keys are split from it per chunk); needed with ``mc_samples``.
    mc_samples: S MC-dropout samples (0: one deterministic pass per model).
    chunk_size: items per chunk (memory holds one chunk's ``[M, S, chunk, C]``).

  Returns:
    the scores, exactly those of scoring the whole pool in memory with the same keys per chunk.
  """
  n = len(pool)
  if where is not None and np.shape(where) != (n,):
    raise ValueError(f"where must be shaped [{n}], got {np.shape(where)}")
  if mc_samples and key is None:
    raise ValueError("mc_samples > 0 needs a dropout key")
  m = jax.tree.leaves(variables)[0].shape[0]
  out = np.empty(n, np.float32)
  for start, x in pool.chunks(chunk_size):
    keys = (jax.random.split(jax.random.fold_in(key, start), m) if mc_samples else None)
    lp = learner.predict(variables, jnp.asarray(x), keys=keys, mc_samples=mc_samples).log_probs
    lp = lp.reshape(-1, *lp.shape[2:])  # [M·S, n, C]
    w = None if where is None else jnp.asarray(where[start:start + len(x)])
    out[start:start + len(x)] = np.asarray(score(lp, where=w))
  return out
