"""Dense pool scoring, shared by the segmentation and detection benchmarks: a scenes pool on
disk scored chunk by chunk under a per-element score reduced per image."""

import os
import time

from benchmarks import _common


def measure(n: int, mc_samples: int, chunk: int, directory: str, *, model: str = "unet",
            classes: int = 11, task: str = "segmentation", width: int = 8,
            element_score: str = "bald", reduction: str = "top_q_mean") -> dict:
  """One pool size, in this process: the ``model`` of ``task`` (``classes`` classes) scores the
  scenes pool by the per-element ``element_score`` (an ``acquisition`` function name) reduced
  per image by ``reduction``."""
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
  from dal_jax import tasks

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
  learner = learner_lib.Learner(model=models.get_model(model, (64, 64, 1), classes, width=width),
                                chunk_size=chunk, task=tasks.get_task(task))
  variables = learner.init(jax.random.split(jax.random.key(0), 1), jnp.zeros((1, 64, 64, 1)))

  def score(lp, *, where=None):
    element = getattr(acquisition, element_score)(lp)  # [n, H, W] pixels or [n, h, w] cells
    mask = None if where is None else jnp.broadcast_to(where[:, None, None], element.shape)
    return acquisition.reduce_scores(element, reduction=reduction, q=0.1, where=mask)

  streaming.stream_scores(learner, variables, _common.FirstChunk(pool, chunk), score,
                          key=jax.random.key(1), mc_samples=mc_samples, chunk_size=chunk)
  t0 = time.perf_counter()
  scores = streaming.stream_scores(learner, variables, pool, score, where=np.ones(n, bool),
                                   key=jax.random.key(1), mc_samples=mc_samples,
                                   chunk_size=chunk)
  top = np.asarray(acquisition.top_k(jnp.asarray(scores), min(100, n)))
  seconds = time.perf_counter() - t0
  os.remove(path + ".array_record")
  cells = tuple(int(d) for d in learner.model.apply(
      learner_lib.index(variables, 0)["model"],
      jnp.zeros((1, 64, 64, 1)), train=False)[0].shape[1:3])
  return {"pool_size": n, "image_shape": [64, 64, 1], "task": task, "model": model,
          "element_score": element_score, "reduction": reduction,
          "classes": classes, "elements_per_image": list(cells), "mc_samples": mc_samples,
          "width": width,
          "chunk_size": chunk, "write_seconds": t_write, "score_seconds": seconds,
          "images_per_second": n / seconds, "peak_rss_mib": _common.peak_rss_mib(),
          "peak_rss_mib_before_scoring": rss_before, "selected": len(set(top.tolist())),
          "finite_scores": bool(np.isfinite(scores).all()),
          "log_probs_bytes_if_materialised":
              mc_samples * n * cells[0] * cells[1] * (classes + (task == "detection")) * 4}
