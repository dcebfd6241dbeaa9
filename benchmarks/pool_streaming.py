r"""Pools larger than memory: scoring a pool read in chunks from ``array_record`` files.

  python -m benchmarks.pool_streaming --out=benchmarks/results/pool_streaming.json

For each pool size N (default 100,000 and 1,000,000 Fashion-MNIST-shaped items, random uint8),
a fresh process writes the pool with ``dal_jax.streaming.write_pool`` (in chunks), then scores
it with MC-dropout BALD of the Gal et al. CNN (S = 20, random weights: throughput does not
depend on them) through ``dal_jax.streaming.stream_scores`` and takes the top 100. It reports
items/s of the scoring (compilation excluded by a warm-up chunk) and the process's peak resident
memory. Held in memory per item is O(1): a float32 score, a candidate flag and the reader's
bookkeeping, never the pool itself (784 bytes per item as uint8, 3,136 as float32).

Measured on the 2-core CPU machine (JAX 0.10.2): 4,499 items/s at 100k and 4,879 at 1M, peak
RSS 749 MiB and 802 MiB: 62 bytes per item of growth, where the pool in memory would be 3.1 GB.
"""

import os
import time

from absl import app
from absl import flags

from benchmarks import _common

_OUT = flags.DEFINE_string("out", "benchmarks/results/pool_streaming.json", "JSON output")
_POOL_SIZES = flags.DEFINE_list("pool_sizes", ["100000", "1000000"], "pool sizes N")
_SAMPLES = flags.DEFINE_integer("mc_samples", 20, "MC-dropout samples S")
_CHUNK = flags.DEFINE_integer("chunk_size", 2048, "items per chunk")


def measure(n: int, mc_samples: int, chunk: int, directory: str) -> dict:
  """One pool size, in this process."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  from dal_jax import acquisition
  from dal_jax import learner as learner_lib
  from dal_jax import models
  from dal_jax import streaming

  path = os.path.join(directory, f"pool_{n}")
  rng = np.random.default_rng(0)
  t0 = time.perf_counter()
  streaming.write_pool(path, (rng.integers(0, 256, (min(10000, n - s), 28, 28, 1), np.uint8)
                              for s in range(0, n, 10000)), shape=(28, 28, 1))
  t_write = time.perf_counter() - t0
  pool = streaming.RecordPool(path)
  rss_before = _common.peak_rss_mib()
  model = models.get_model("gal_cnn", (28, 28, 1), 10)
  learner = learner_lib.Learner(model=model, chunk_size=chunk)
  variables = learner.init(jax.random.split(jax.random.key(0), 1), jnp.zeros((1, 28, 28, 1)))
  where = np.ones(n, bool)
  streaming.stream_scores(learner, variables, _common.FirstChunk(pool, chunk), acquisition.bald,
                          key=jax.random.key(1), mc_samples=mc_samples, chunk_size=chunk)
  t0 = time.perf_counter()
  scores = streaming.stream_scores(learner, variables, pool, acquisition.bald, where=where,
                                   key=jax.random.key(1), mc_samples=mc_samples,
                                   chunk_size=chunk)
  top = np.asarray(acquisition.top_k(jnp.asarray(scores), 100))
  seconds = time.perf_counter() - t0
  os.remove(path + ".array_record")
  return {"pool_size": n, "mc_samples": mc_samples, "chunk_size": chunk,
          "write_seconds": t_write, "score_seconds": seconds, "items_per_second": n / seconds,
          "peak_rss_mib": _common.peak_rss_mib(), "peak_rss_mib_before_scoring": rss_before,
          "selected": len(set(top.tolist())),
          "pool_bytes_if_in_memory_float32": n * 28 * 28 * 4}


def main(argv):
  del argv
  if _common.run_child("DAL_JAX_POOL_STREAMING_CHILD",
                       lambda n, d: measure(n, _SAMPLES.value, _CHUNK.value, d)):
    return
  rows = _common.rows_per_size(
      "benchmarks.pool_streaming", "DAL_JAX_POOL_STREAMING_CHILD",
      [int(v) for v in _POOL_SIZES.value],
      [f"--mc_samples={_SAMPLES.value}", f"--chunk_size={_CHUNK.value}"])
  result = {**_common.machine(), "rows": rows,
            "rss_growth_bytes_per_item": (
                (rows[-1]["peak_rss_mib"] - rows[0]["peak_rss_mib"]) * 2**20
                / (rows[-1]["pool_size"] - rows[0]["pool_size"]) if len(rows) > 1 else None)}
  _common.write_result(_OUT.value, result)


if __name__ == "__main__":
  app.run(main)
