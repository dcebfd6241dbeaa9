"""Classification: one class per item (``[N]`` int labels), cross-entropy, accuracy / NLL / ECE.

Labels below 0 are not trained on (out-of-distribution items, answered but without a class).
"""

from __future__ import annotations

import jax
import optax

from dal_jax import metrics as metrics_lib
from dal_jax.tasks._base import Task
from dal_jax.tasks._base import register_task


def _minus_nll(logits, labels):
  return -metrics_lib.nll(jax.nn.log_softmax(logits), labels)


CLASSIFICATION = register_task(Task(
    name="classification",
    label_shape=lambda input_shape: (),
    loss=optax.softmax_cross_entropy_with_integer_labels,
    criteria=(("accuracy", metrics_lib.accuracy), ("nll", _minus_nll)),
    headline="accuracy",
    metrics=metrics_lib.classification_metrics,
    doc="one class per item: cross-entropy; accuracy, NLL, ECE"))
