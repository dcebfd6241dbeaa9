r"""Segmentation pool scoring: per-pixel MC-dropout BALD reduced per image, chunk by chunk.

  python -m benchmarks.segmentation_scoring --out=benchmarks/results/segmentation_scoring.json

For each pool size N (default 2,000 and 10,000 Fashion-MNIST scenes of 64x64 pixels, 11
classes), a fresh process writes the scenes to an ``array_record`` pool
(``dal_jax.streaming.write_pool``) and scores it with the U-Net (``dal_jax.models.UNet``, width
8, depth 2; random weights: throughput does not depend on them) under S = 20 MC-dropout samples: each chunk's
``[S, chunk, 64, 64, 11]`` log-probabilities become per-pixel BALD ``[chunk, 64, 64]`` and then
one score per image (the top-10% mean, ``dal_jax.acquisition.reduce_scores``) before the next
chunk is read, so ``[S, N, H, W, C]`` (18 GB at N = 10,000) never exists; only the ``[N]``
scores do. It reports images/s (compilation excluded by a warm-up chunk) and the process's peak
resident memory, which the chunk sets, not the pool.
"""

import os
import time

from absl import app
from absl import flags

from benchmarks import _common

_OUT = flags.DEFINE_string("out", "benchmarks/results/segmentation_scoring.json", "JSON output")
_POOL_SIZES = flags.DEFINE_list("pool_sizes", ["2000", "10000"], "pool sizes N")
_SAMPLES = flags.DEFINE_integer("mc_samples", 20, "MC-dropout samples S")
_CHUNK = flags.DEFINE_integer("chunk_size", 16, "images per chunk")
_WIDTH = flags.DEFINE_integer("width", 8, "U-Net width (channels of its first level)")


def measure(n: int, mc_samples: int, chunk: int, directory: str) -> dict:
  """One pool size, in this process."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  from dal_jax import _idx_builder
  from dal_jax import acquisition
  from dal_jax import data
  from dal_jax import learner as learner_lib
  from dal_jax import models
  from dal_jax import scenes
  from dal_jax import streaming

  images, labels = _idx_builder.read_idx_split(data.FASHION_MNIST_DIR, "train")
  path = os.path.join(directory, f"scenes_{n}")
  t0 = time.perf_counter()
  streaming.write_pool(path, (scenes.compose_scenes(images, labels, min(1000, n - s),
                                                    seed=s, size=64).x
                              for s in range(0, n, 1000)), shape=(64, 64, 1))
  t_write = time.perf_counter() - t0
  del images, labels
  pool = streaming.RecordPool(path)
  rss_before = _common.peak_rss_mib()
  learner = learner_lib.Learner(model=models.get_model("unet", (64, 64, 1), 11,
                                                     width=_WIDTH.value), chunk_size=chunk)
  variables = learner.init(jax.random.split(jax.random.key(0), 1), jnp.zeros((1, 64, 64, 1)))

  def score(lp, *, where=None):
    element = acquisition.bald(lp)  # [n, H, W]
    mask = None if where is None else jnp.broadcast_to(where[:, None, None], element.shape)
    return acquisition.reduce_scores(element, reduction="top_q_mean", q=0.1, where=mask)

  streaming.stream_scores(learner, variables, _common.FirstChunk(pool, chunk), score,
                          key=jax.random.key(1), mc_samples=mc_samples, chunk_size=chunk)
  t0 = time.perf_counter()
  scores = streaming.stream_scores(learner, variables, pool, score, where=np.ones(n, bool),
                                   key=jax.random.key(1), mc_samples=mc_samples,
                                   chunk_size=chunk)
  top = np.asarray(acquisition.top_k(jnp.asarray(scores), min(100, n)))
  seconds = time.perf_counter() - t0
  os.remove(path + ".array_record")
  return {"pool_size": n, "image_shape": [64, 64, 1], "classes": 11, "mc_samples": mc_samples,
          "unet_width": _WIDTH.value, "unet_depth": 2,
          "chunk_size": chunk, "write_seconds": t_write, "score_seconds": seconds,
          "images_per_second": n / seconds, "peak_rss_mib": _common.peak_rss_mib(),
          "peak_rss_mib_before_scoring": rss_before, "selected": len(set(top.tolist())),
          "finite_scores": bool(np.isfinite(scores).all()),
          "log_probs_bytes_if_materialised": mc_samples * n * 64 * 64 * 11 * 4}


def main(argv):
  del argv
  if _common.run_child("DAL_JAX_SEGMENTATION_CHILD",
                       lambda n, d: measure(n, _SAMPLES.value, _CHUNK.value, d)):
    return
  rows = _common.rows_per_size(
      "benchmarks.segmentation_scoring", "DAL_JAX_SEGMENTATION_CHILD",
      [int(v) for v in _POOL_SIZES.value],
      [f"--mc_samples={_SAMPLES.value}", f"--chunk_size={_CHUNK.value}",
       f"--width={_WIDTH.value}"])
  _common.write_result(_OUT.value, {**_common.machine(), "rows": rows})


if __name__ == "__main__":
  app.run(main)
