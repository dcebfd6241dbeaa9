"""Devices: a 1-D mesh over every device, and shardings for stacked (member/seed) and pool axes.

dal_jax parallelises through ``jax.sharding`` (``jax.pmap`` is in maintenance mode): arrays are
placed with a ``NamedSharding`` and jitted code is partitioned by the compiler, so the same program
runs on 1 CPU, 8 simulated CPU devices (``XLA_FLAGS=--xla_force_host_platform_device_count=8``),
a GPU, or every chip of a TPU slice.

* Stacked models (ensemble members, parallel seeds) are sharded on their leading axis when the
  number of models is a multiple of the device count; otherwise each training batch is sharded
  along its example axis (and the models replicated).
* Pool chunks are sharded along the example axis for scoring; selection (``top_k``) then runs on
  the sharded scores and returns global indices.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import AxisType
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "devices"


def make_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
  """A 1-D mesh named ``"devices"`` over the first ``num_devices`` devices (default: all).

  ``jax.make_mesh`` defaults to Explicit axes; dal_jax uses Auto axes so sharding is a placement
  decision and the numerical program is unchanged.
  """
  n = num_devices or jax.device_count()
  if n < 1 or n > jax.device_count():
    raise ValueError(f"num_devices={n} must be in [1, {jax.device_count()}]")
  return jax.make_mesh((n,), (AXIS,), axis_types=(AxisType.Auto,),
                       devices=jax.devices()[:n])


def stacked_layout(mesh: jax.sharding.Mesh | None, num_models: int, batch_size: int) -> str:
  """``"members"`` (shard the model axis), ``"batch"`` (shard examples) or ``"replicated"``."""
  if mesh is None or mesh.size == 1:
    return "replicated"
  if num_models % mesh.size == 0:
    return "members"
  if batch_size % mesh.size == 0:
    return "batch"
  return "replicated"


def host_value(a) -> np.ndarray:
  """The whole value of an array on this host: a global array spread over other processes'
  devices is gathered (every process must call this together)."""
  if isinstance(a, jax.Array) and not a.is_fully_addressable and not a.is_fully_replicated:
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(a, tiled=True))
  return np.asarray(a)


def put(a, sharding: NamedSharding):
  """``jax.device_put`` onto a mesh that may span other processes' devices: with several
  processes every process holds the whole value and contributes its devices' shards."""
  if jax.process_count() == 1 or sharding.is_fully_addressable:
    return jax.device_put(a, sharding)
  if isinstance(a, jax.Array) and a.sharding == sharding:
    return a
  if _is_key(a):
    data = put(jax.random.key_data(a), sharding)
    return jax.random.wrap_key_data(data, impl=jax.random.key_impl(a))
  value = host_value(a)
  return jax.make_array_from_callback(value.shape, sharding, lambda idx: value[idx])


def everywhere(tree, mesh: jax.sharding.Mesh | None):
  """With several processes, makes every array of ``tree`` whole on every process (replicated
  over the mesh), so that host code (selection, metrics, checkpoints) reads the same values on
  every process; with one process, the tree as it is."""
  if mesh is None or jax.process_count() == 1:
    return tree
  replicated = NamedSharding(mesh, P())
  return jax.tree.map(
      lambda a: a if not isinstance(a, jax.Array) or a.is_fully_replicated
      else jax.jit(lambda v: v, out_shardings=replicated)(a), tree)


def _is_key(a) -> bool:
  return hasattr(a, "dtype") and jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key)


def shard_leading(tree, mesh: jax.sharding.Mesh | None):
  """Places every leaf with its leading axis split over the mesh (no-op without a mesh)."""
  if mesh is None or mesh.size == 1:
    return tree
  return jax.tree.map(lambda a: put(a, NamedSharding(mesh, P(AXIS))), tree)


def replicate(tree, mesh: jax.sharding.Mesh | None):
  if mesh is None or mesh.size == 1:
    return tree
  return jax.tree.map(lambda a: put(a, NamedSharding(mesh, P())), tree)


def batch_constraint(x, mesh: jax.sharding.Mesh | None, axis: int):
  """Inside jit: asks for ``x`` split over the mesh along ``axis``."""
  if mesh is None or mesh.size == 1:
    return x
  spec = [None] * x.ndim
  spec[axis] = AXIS
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P(*spec)))


ENV_ADDRESS, ENV_COUNT, ENV_ID = "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"


def maybe_initialize_distributed(enabled: bool) -> None:
  """``jax.distributed.initialize`` for runs over several processes (hosts).

  The coordinator address, process count and process id come from ``JAX_COORDINATOR_ADDRESS``,
  ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` when they are set (the command-line flags
  ``--coordinator_address``, ``--num_processes``, ``--process_id`` set them); otherwise JAX
  detects them (Cloud TPU, SLURM, Open MPI). Call before any other JAX work; a second call in
  the same process does nothing.
  """
  if not enabled or jax.distributed.is_initialized():
    return
  address, count, pid = (os.environ.get(k) for k in (ENV_ADDRESS, ENV_COUNT, ENV_ID))
  if address or count or pid:
    if not (address and count and pid):
      raise ValueError(f"a run over several processes needs all of {ENV_ADDRESS}, {ENV_COUNT} "
                       f"and {ENV_ID} (or --coordinator_address, --num_processes, --process_id); "
                       f"got address={address!r}, processes={count!r}, id={pid!r}")
    try:
      count_i, pid_i = int(count), int(pid)
    except ValueError:
      raise ValueError(f"{ENV_COUNT}={count!r} and {ENV_ID}={pid!r} must be integers") from None
    if not 0 <= pid_i < count_i:
      raise ValueError(f"{ENV_ID}={pid_i} must be in [0, {ENV_COUNT}={count_i})")
    jax.distributed.initialize(address, count_i, pid_i)
  else:
    jax.distributed.initialize()


def check_same_everywhere(value, what: str) -> None:
  """With several processes, checks that every process holds the same ``value`` (an integer
  array: a selection); raises ``ValueError`` naming ``what`` when they differ."""
  if jax.process_count() == 1:
    return
  from jax.experimental import multihost_utils

  value = np.asarray(value, np.int64).reshape(-1)
  every = np.asarray(multihost_utils.process_allgather(value))  # [processes, k]
  if not (every == every[:1]).all():
    raise ValueError(f"{what} differs between processes ({every.tolist()}); the processes of "
                     "one run must run the same code on the same data")


def is_writer() -> bool:
  """Whether this process writes files (process 0 of a run over several processes)."""
  return jax.process_index() == 0


def pad_to_multiple(n: int, multiple: int) -> int:
  return int(np.ceil(n / multiple) * multiple)
