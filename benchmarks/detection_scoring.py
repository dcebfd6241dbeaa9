r"""Detection pool scoring: per-cell MC-dropout box entropy reduced per image, chunk by chunk.

  python -m benchmarks.detection_scoring --out=benchmarks/results/detection_scoring.json

For each pool size N (default 2,000 and 10,000 Fashion-MNIST scenes of 64x64 pixels, 10 item
classes), a fresh process writes the scenes to an ``array_record`` pool and scores it with the
detector (``dal_jax.models.CenterNet``, width 8, stride 4; random weights: throughput does not
depend on them) under S = 20 MC-dropout samples: each chunk's ``[S, chunk, 16, 16, 11]`` cell
log-probabilities (the detection task's ``log_probs`` of the outputs) become per-cell
objectness-weighted box entropy and then one score per image (the max) before the next chunk is
read, so ``[S, N, h, w, C + 1]`` never exists; only the ``[N]`` scores do. The measurement is
the segmentation benchmark's (:func:`benchmarks._dense_scoring.measure`) with the
detection task: images/s (compilation excluded by a warm-up chunk) and the process's peak
resident memory, which the chunk sets, not the pool.
"""

from absl import app
from absl import flags

from benchmarks import _common
from benchmarks import _dense_scoring

_OUT = flags.DEFINE_string("out", "benchmarks/results/detection_scoring.json", "JSON output")
_POOL_SIZES = flags.DEFINE_list("pool_sizes", ["2000", "10000"], "pool sizes N")
_SAMPLES = flags.DEFINE_integer("mc_samples", 20, "MC-dropout samples S")
_CHUNK = flags.DEFINE_integer("chunk_size", 64, "images per chunk")
_WIDTH = flags.DEFINE_integer("width", 8, "detector width (channels of its first layer)")


def main(argv):
  del argv
  if _common.run_child("DAL_JAX_DETECTION_CHILD", lambda n, d: _dense_scoring.measure(
      n, _SAMPLES.value, _CHUNK.value, d, model="centernet", classes=10, task="detection",
      width=_WIDTH.value, element_score="box_entropy", reduction="max")):
    return
  rows = _common.rows_per_size(
      "benchmarks.detection_scoring", "DAL_JAX_DETECTION_CHILD",
      [int(v) for v in _POOL_SIZES.value],
      [f"--mc_samples={_SAMPLES.value}", f"--chunk_size={_CHUNK.value}",
       f"--width={_WIDTH.value}"])
  _common.write_result(_OUT.value, {**_common.machine(), "rows": rows})


if __name__ == "__main__":
  app.run(main)
