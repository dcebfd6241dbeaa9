r"""Weak scaling of pool scoring over processes (JAX's multi-process runtime).

  python -m benchmarks.weak_scaling --out=benchmarks/results/weak_scaling.json

For P in ``--processes`` (default 1 and 2), P processes on 127.0.0.1 (``jax.distributed``,
gloo collectives on CPU; ``--devices_per_process`` CPU devices each) score a pool on disk of
``--items_per_process`` · P items with MC-dropout BALD of the Gal et al. CNN (S = 20, random
weights), the pool's chunks split over every device of every process: each process reads only
its devices' rows of each chunk (``dal_jax.learner.Learner.predict_chunks`` on a
``dal_jax.streaming.RecordPool``) and keeps the ``[N]`` scores; the top 100 are then checked to
be the same on every process. Weak scaling holds the work per process fixed, so ideal scaling
keeps the wall time constant: efficiency = T(1) / T(P).

On one machine the processes would share its cores, so by default (``--pin``) process i is
pinned to core i: each process has one core whatever P is, as each host of a cluster brings its
own. What is measured is then the cost of the multi-process runtime (the collectives that make
each chunk's predictions whole on every process, the per-process reads), not a cluster's
network.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

from benchmarks import _common

_OUT = flags.DEFINE_string("out", "benchmarks/results/weak_scaling.json", "JSON output")
_PROCESSES = flags.DEFINE_list("processes", ["1", "2"], "process counts P")
_ITEMS = flags.DEFINE_integer("items_per_process", 20000, "pool items per process")
_DEVICES = flags.DEFINE_integer("devices_per_process", 1, "CPU devices per process")
_SAMPLES = flags.DEFINE_integer("mc_samples", 20, "MC-dropout samples S")
_CHUNK = flags.DEFINE_integer("chunk_size", 2048, "items per chunk (over all devices)")
_PIN = flags.DEFINE_bool("pin", True, "pin process i to core i (so each process has one core "
                         "whatever P is, as on hosts of their own)")


def child(directory: str, processes: int) -> dict:
  """One process of a P-process run (P = 1 without the distributed runtime)."""
  if _PIN.value:  # before JAX starts its threads
    os.sched_setaffinity(0, {int(os.environ.get("JAX_PROCESS_ID", "0")) % os.cpu_count()})
  import jax
  import jax.numpy as jnp
  import numpy as np

  from dal_jax import acquisition
  from dal_jax import learner as learner_lib
  from dal_jax import models
  from dal_jax import parallel
  from dal_jax import streaming

  parallel.maybe_initialize_distributed(processes > 1)
  n = _ITEMS.value * processes
  path = os.path.join(directory, "pool")
  if parallel.is_writer():
    rng = np.random.default_rng(0)
    streaming.write_pool(path, (rng.integers(0, 256, (min(10000, n - s), 28, 28, 1), np.uint8)
                                for s in range(0, n, 10000)), shape=(28, 28, 1))
  if processes > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices("pool written")
  pool = streaming.RecordPool(path)
  mesh = parallel.make_mesh() if jax.device_count() > 1 else None
  learner = learner_lib.Learner(model=models.get_model("gal_cnn", (28, 28, 1), 10),
                                mesh=mesh, chunk_size=_CHUNK.value, vectorize=True)
  variables = learner.init(jax.random.split(jax.random.key(0), 1), jnp.zeros((1, 28, 28, 1)))
  keys = jax.random.split(jax.random.key(1), 1)

  def scores(x) -> np.ndarray:
    out = np.empty(x.shape[0], np.float32)
    for start, p in learner.predict_chunks(variables, x, keys=keys,
                                           mc_samples=_SAMPLES.value):
      lp = learner_lib.ensemble_log_probs(p.log_probs)
      out[start:start + lp.shape[1]] = np.asarray(acquisition.bald(lp))
    return out

  scores(pool[:_CHUNK.value])  # compiles the chunk program
  if processes > 1:
    multihost_utils.sync_global_devices("warm")
  t0 = time.perf_counter()
  top = np.asarray(acquisition.top_k(jnp.asarray(scores(pool)), 100))
  seconds = time.perf_counter() - t0
  parallel.check_same_everywhere(top, "the top 100")
  return {"processes": processes, "process": jax.process_index(), "devices": jax.device_count(),
          "pool_size": n, "score_seconds": seconds, "items_per_second": n / seconds,
          "peak_rss_mib": _common.peak_rss_mib()}


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def main(argv):
  del argv
  if os.environ.get("DAL_JAX_WEAK_SCALING_DIR"):
    out = child(os.environ["DAL_JAX_WEAK_SCALING_DIR"],
                int(os.environ.get("JAX_NUM_PROCESSES", "1")))
    print("RESULT " + json.dumps(out), flush=True)
    return
  flags_out = [f"--items_per_process={_ITEMS.value}", f"--mc_samples={_SAMPLES.value}",
               f"--chunk_size={_CHUNK.value}", f"--pin={_PIN.value}"]
  rows = []
  for p in (int(v) for v in _PROCESSES.value):
    with tempfile.TemporaryDirectory() as d:
      env = {**os.environ, "DAL_JAX_WEAK_SCALING_DIR": d, "JAX_PLATFORMS": "cpu",
             "JAX_NUM_CPU_DEVICES": str(_DEVICES.value)}
      if p > 1:
        env.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{_free_port()}",
                   JAX_NUM_PROCESSES=str(p))
      procs = [subprocess.Popen([sys.executable, "-m", "benchmarks.weak_scaling", *flags_out],
                                env={**env, "JAX_PROCESS_ID": str(i)} if p > 1 else env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for i in range(p)]
      outs = [proc.communicate(timeout=1800) for proc in procs]
      for proc, (_, err) in zip(procs, outs):
        if proc.returncode:
          raise SystemExit(f"a process of the {p}-process run failed:\n{err[-3000:]}")
      per_process = [json.loads([line for line in out.splitlines()
                                 if line.startswith("RESULT ")][0][7:]) for out, _ in outs]
    seconds = max(r["score_seconds"] for r in per_process)
    rows.append({"processes": p, "devices": per_process[0]["devices"],
                 "pool_size": per_process[0]["pool_size"], "score_seconds": seconds,
                 "items_per_second": per_process[0]["pool_size"] / seconds,
                 "peak_rss_mib_per_process": [r["peak_rss_mib"] for r in per_process]})
    print(json.dumps(rows[-1]), flush=True)
  base = rows[0]["score_seconds"]
  for r in rows:
    r["weak_scaling_efficiency"] = base / r["score_seconds"]
  result = {**_common.machine(), "items_per_process": _ITEMS.value, "devices_per_process": _DEVICES.value,
            "mc_samples": _SAMPLES.value, "chunk_size": _CHUNK.value,
            "pinned_one_core_per_process": _PIN.value, "rows": rows}
  _common.write_result(_OUT.value, result)


if __name__ == "__main__":
  app.run(main)
