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

from absl import app
from absl import flags

from benchmarks import _common
from benchmarks import _dense_scoring

_OUT = flags.DEFINE_string("out", "benchmarks/results/segmentation_scoring.json", "JSON output")
_POOL_SIZES = flags.DEFINE_list("pool_sizes", ["2000", "10000"], "pool sizes N")
_SAMPLES = flags.DEFINE_integer("mc_samples", 20, "MC-dropout samples S")
_CHUNK = flags.DEFINE_integer("chunk_size", 16, "images per chunk")
_WIDTH = flags.DEFINE_integer("width", 8, "U-Net width (channels of its first level)")


def main(argv):
  del argv
  if _common.run_child("DAL_JAX_SEGMENTATION_CHILD",
                       lambda n, d: _dense_scoring.measure(n, _SAMPLES.value, _CHUNK.value,
                                                           d, width=_WIDTH.value)):
    return
  rows = _common.rows_per_size(
      "benchmarks.segmentation_scoring", "DAL_JAX_SEGMENTATION_CHILD",
      [int(v) for v in _POOL_SIZES.value],
      [f"--mc_samples={_SAMPLES.value}", f"--chunk_size={_CHUNK.value}",
       f"--width={_WIDTH.value}"])
  _common.write_result(_OUT.value, {**_common.machine(), "rows": rows})


if __name__ == "__main__":
  app.run(main)
