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


def shard_leading(tree, mesh: jax.sharding.Mesh | None):
  """Places every leaf with its leading axis split over the mesh (no-op without a mesh)."""
  if mesh is None or mesh.size == 1:
    return tree
  return jax.tree.map(lambda a: jax.device_put(a, NamedSharding(mesh, P(AXIS))), tree)


def replicate(tree, mesh: jax.sharding.Mesh | None):
  if mesh is None or mesh.size == 1:
    return tree
  return jax.tree.map(lambda a: jax.device_put(a, NamedSharding(mesh, P())), tree)


def batch_constraint(x, mesh: jax.sharding.Mesh | None, axis: int):
  """Inside jit: asks for ``x`` split over the mesh along ``axis``."""
  if mesh is None or mesh.size == 1:
    return x
  spec = [None] * x.ndim
  spec[axis] = AXIS
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P(*spec)))


def maybe_initialize_distributed(enabled: bool) -> None:
  """``jax.distributed.initialize()`` for multi-host runs (TPU pod slices, multi-node GPU).

  On Cloud TPU and SLURM/Open MPI clusters the coordinator address, process count and id are
  detected from the environment; elsewhere set ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``
  and ``JAX_PROCESS_ID``. Call before any other JAX work.
  """
  if enabled:
    jax.distributed.initialize()


def pad_to_multiple(n: int, multiple: int) -> int:
  return int(np.ceil(n / multiple) * multiple)
