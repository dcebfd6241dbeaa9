"""Pools larger than memory: items read in chunks from ``array_record`` files and scored chunk by
chunk, so that only O(N) numbers (a score and a flag per item) are ever held for the pool.

A pool on disk is ``PATH.array_record`` (one record per item: its ``[H, W, C]`` uint8 bytes)
and ``PATH.json`` (the item shape). :class:`RecordPool` reads any set of items by index (random
access through ``array_record``'s data source, the reader Grain is built on) and iterates over
chunks; :func:`stream_scores` runs a learner's (MC-dropout / ensemble) predictions over the
chunks and reduces each chunk to its ``[chunk]`` scores at once, never ``[S, N, C]`` for the
pool. Selection then works on the ``[N]`` scores (``acquisition.top_k`` and the stochastic
selectors), and the selected items' inputs are gathered by index.

The simulated loop (:mod:`dal_jax.loop`) still holds its pool in memory; this module is the
reader and scorer the out-of-memory path is built from (``benchmarks/pool_streaming.py``
measures it on 10^6 items).
"""

from __future__ import annotations

import json
import os
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np


def write_pool(path: str, chunks, *, shape: tuple[int, int, int]) -> int:
  """Writes items to ``path.array_record`` (+ ``path.json``) from an iterable of ``[k, H, W, C]``
  uint8 chunks; returns the item count."""
  from array_record.python import array_record_module

  shape = tuple(int(s) for s in shape)
  writer = array_record_module.ArrayRecordWriter(path + ".array_record", "group_size:256")
  n = 0
  try:
    for chunk in chunks:
      chunk = np.asarray(chunk)
      if chunk.dtype != np.uint8 or chunk.shape[1:] != shape:
        raise ValueError(f"pool chunks must be uint8 [k, {', '.join(map(str, shape))}], got "
                         f"{chunk.dtype} {chunk.shape}")
      for item in chunk:
        writer.write(item.tobytes())
      n += len(chunk)
  finally:
    writer.close()
  with open(path + ".json", "w") as f:
    json.dump({"shape": list(shape), "items": n}, f)
  return n


class RecordPool:
  """A pool on disk: ``len(pool)``, ``pool.read(indices) -> [k, H, W, C] float32`` in [0, 1],
  ``pool.chunks(size)`` -> ``(start, [size, H, W, C])`` in order."""

  def __init__(self, path: str):
    from array_record.python import array_record_data_source

    try:
      with open(path + ".json") as f:
        meta = json.load(f)
      self.shape = tuple(int(s) for s in meta["shape"])
    except (OSError, ValueError, KeyError, TypeError) as e:
      raise ValueError(f"{path}.json: not a pool written by dal_jax.streaming.write_pool "
                       f"({type(e).__name__})") from None
    if not os.path.exists(path + ".array_record"):
      raise ValueError(f"{path}.array_record does not exist")
    self.source = array_record_data_source.ArrayRecordDataSource([path + ".array_record"])
    if len(self.source) != meta.get("items"):
      raise ValueError(f"{path}.array_record holds {len(self.source)} items, its .json says "
                       f"{meta.get('items')}: the files do not belong together")

  def __len__(self) -> int:
    return len(self.source)

  def read(self, indices) -> np.ndarray:
    indices = [int(i) for i in np.asarray(indices).reshape(-1)]
    if indices and not 0 <= min(indices) <= max(indices) < len(self):
      raise ValueError(f"item indices must be in [0, {len(self)})")
    raw = self.source.__getitems__(indices)
    out = np.frombuffer(b"".join(raw), np.uint8).reshape(len(indices), *self.shape)
    return out.astype(np.float32) / 255.0

  def chunks(self, size: int) -> Iterator[tuple[int, np.ndarray]]:
    if size < 1:
      raise ValueError(f"chunk size must be >= 1, got {size}")
    for start in range(0, len(self), size):
      yield start, self.read(range(start, min(start + size, len(self))))


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
