"""A run's workdir: a lock, checkpoints that carry their config and records, crash-safe metrics.

Layout::

  workdir/.lock                        held by the running process (a second one is refused)
  workdir/config.json                  the resolved config, for reading (not trusted on resume)
  workdir/seed_<s>/checkpoints/<r>/    orbax: the whole LoopState (and warm-start variables),
                                       plus the resolved config, the schema version and every
                                       round record so far
  workdir/seed_<s>/metrics.jsonl       one JSON line per round, append-only
  workdir/seed_<s>/final_state.npz     labeled mask, labels, acquisition round of every point

The checkpoints are the truth: a resume compares the config stored in them with the current one
(so editing or deleting ``config.json`` cannot let another config continue them), and
``metrics.jsonl`` is rebuilt from their records when it lacks rounds or holds a torn line.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import functools
import json
import os
import socket
import sys
import threading
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from dal_jax import config as config_lib


class WorkdirLock:
  """An exclusive ``flock`` on ``workdir/.lock`` for the life of the process (released by the
  kernel when the process dies, SIGKILL included). In a run over several processes, process 0
  holds it for the run (the others wait for it at JAX's barriers)."""

  def __init__(self, workdir: str, *, what: str = "workdir"):
    self.fd = None
    if jax.process_count() > 1 and jax.process_index() != 0:
      return
    os.makedirs(workdir, exist_ok=True)
    self.path = os.path.join(workdir, ".lock")
    self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno not in (errno.EAGAIN, errno.EACCES):
        raise
      holder = os.pread(self.fd, 4096, 0).decode(errors="replace").strip() or "unknown"
      os.close(self.fd)
      other = "use another --workdir" if what == "workdir" else f"use another {what}"
      raise ValueError(f"{what} {workdir!r} is in use by another dal_jax process ({holder}); "
                       f"wait for it to finish or {other}") from None
    os.ftruncate(self.fd, 0)
    os.pwrite(self.fd, (f"pid {os.getpid()} on {socket.gethostname()}, started "
                        f"{datetime.datetime.now().isoformat(timespec='seconds')}: "
                        f"{' '.join(sys.argv[:3])}\n").encode(), 0)

  def release(self) -> None:
    if self.fd is not None:
      fcntl.flock(self.fd, fcntl.LOCK_UN)
      os.close(self.fd)
      self.fd = None


def _is_key(x) -> bool:
  return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def to_leaves(tree) -> list[Any]:
  """Array leaves of a pytree, PRNG keys as their key data (what orbax can store). With several
  processes the leaves are host copies (each process holds the same values; orbax writes them
  once)."""
  leaves = [jax.random.key_data(x) if _is_key(x) else x for x in jax.tree.leaves(tree)]
  if jax.process_count() > 1:
    from dal_jax import parallel
    leaves = [parallel.host_value(x) if isinstance(x, jax.Array) else x for x in leaves]
  return leaves


def from_leaves(template, leaves) -> Any:
  """Inverse of :func:`to_leaves` with ``template``'s structure and key types."""
  out = [jax.random.wrap_key_data(v, impl=jax.random.key_impl(t)) if _is_key(t)
         else jax.numpy.asarray(v) if isinstance(t, jax.Array) and not isinstance(v, jax.Array)
         else v for t, v in zip(jax.tree.leaves(template), leaves)]
  return jax.tree.unflatten(jax.tree.structure(template), out)


# Orbax's checkpoint operations coordinate through process-wide signals that two threads must
# not interleave (runs trained side by side in threads, ``config.workers``): one at a time.
_ORBAX = threading.RLock()


def _serialized(method):
  @functools.wraps(method)
  def wrapper(*args, **kwargs):
    with _ORBAX:
      return method(*args, **kwargs)
  return wrapper


class SeedCheckpoints:
  """Orbax checkpoints of one seed: ``state`` (array leaves) and ``meta`` (JSON: schema
  version, resolved config, round records). Safe to use from several threads."""

  @_serialized
  def __init__(self, directory: str, keep: int):
    if keep < 1:
      raise ValueError(f"checkpoints_to_keep must be >= 1, got {keep}")
    self.directory = os.path.abspath(directory)
    self.manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

  @_serialized
  def latest(self) -> int | None:
    return self.manager.latest_step()

  @_serialized
  def meta(self) -> dict[str, Any] | None:
    """The latest checkpoint's metadata, or None without checkpoints."""
    step = self.latest()
    if step is None:
      return None
    try:
      return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))[
          "meta"]
    except Exception as e:  # orbax raises several types for foreign or damaged checkpoints
      raise ValueError(f"checkpoint {step} in {self.directory} has no readable metadata "
                       f"({type(e).__name__}); it was written by an older dal_jax (before "
                       f"schema {config_lib.SCHEMA_VERSION}) or is damaged: resume it with the "
                       "version that wrote it, or use a new --workdir") from None

  @_serialized
  def save(self, step: int, tree, meta: dict[str, Any]) -> None:
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave({"leaves": to_leaves(tree)}), meta=ocp.args.JsonSave(meta)))
    self.manager.wait_until_finished()

  @_serialized
  def restore(self, template) -> tuple[Any, dict[str, Any]]:
    step = self.latest()
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, {"leaves": to_leaves(template)})
    try:
      out = self.manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
    except Exception as e:  # orbax raises several types for unreadable checkpoints
      raise ValueError(f"checkpoint {step} in {self.directory} cannot be restored "
                       f"({type(e).__name__}: {str(e)[:200]}); delete it to restart that "
                       "seed") from None
    return from_leaves(template, out["state"]["leaves"]), out["meta"]

  @_serialized
  def close(self) -> None:
    self.manager.close()


class MetricsFile:
  """``metrics.jsonl``: one JSON line per round, appended and fsynced."""

  def __init__(self, path: str):
    self.path = path

  def read(self) -> tuple[list[dict[str, Any]], bool]:
    """``(records, intact)``: the parseable lines, and whether every line parsed."""
    if not os.path.exists(self.path):
      return [], True
    records, intact = [], True
    with open(self.path) as f:
      for line in f:
        if not line.strip():
          continue
        try:
          records.append(json.loads(line))
        except json.JSONDecodeError:
          intact = False
    return records, intact

  def rewrite(self, records: list[dict[str, Any]]) -> None:
    """Replaces the file atomically (write a temporary file, then rename)."""
    tmp = self.path + ".tmp"
    with open(tmp, "w") as f:
      f.writelines(json.dumps(r) + "\n" for r in records)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, self.path)

  def append(self, record: dict[str, Any]) -> None:
    if jax.process_index() != 0:
      return
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")
      f.flush()
      os.fsync(f.fileno())

  def sync(self, records: list[dict[str, Any]]) -> None:
    """Makes the file hold exactly ``records`` (the checkpointed rounds) unless it already does
    (lines of rounds past the checkpoint, torn lines and missing rounds are repaired)."""
    if jax.process_index() != 0:
      return
    lines, intact = self.read()
    if not intact or lines != records:
      self.rewrite(records)


def write_final_state(path: str, state, pool_source) -> None:
  if jax.process_index() != 0:
    return
  np.savez(path, labeled=np.asarray(state.labeled), labels=np.asarray(state.labels),
           acquired_round=np.asarray(state.acquired_round), pool_source=pool_source)
