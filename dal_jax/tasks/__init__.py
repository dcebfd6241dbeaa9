"""Tasks: what a label is, its loss and its metrics (:class:`Task`), registered by name.

``get_task("classification")`` is the task every experiment ran before tasks were a unit; a
learner without a task uses it. ``segmentation`` labels every pixel (``[N, H, W]``, -1 where
not labeled) and is judged by mean IoU; the loop queries whole images or windows of them. ``detection`` labels boxes (``[N, B, 5]`` rows ``(class, top, left, bottom,
right)``, class -1 pads) and is judged by COCO mAP.
"""

from dal_jax.tasks._base import TASKS
from dal_jax.tasks._base import Task
from dal_jax.tasks._base import get_task
from dal_jax.tasks._base import register_task
from dal_jax.tasks.classification import CLASSIFICATION
from dal_jax.tasks.detection import DETECTION
from dal_jax.tasks.segmentation import SEGMENTATION

__all__ = ["CLASSIFICATION", "DETECTION", "SEGMENTATION", "TASKS", "Task", "get_task", "register_task"]
