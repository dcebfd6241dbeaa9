"""Tasks: what a label is, its loss and its metrics (:class:`Task`), registered by name.

``get_task("classification")`` is the task every experiment ran before tasks were a unit; a
learner without a task uses it.
"""

from dal_jax.tasks._base import TASKS
from dal_jax.tasks._base import Task
from dal_jax.tasks._base import get_task
from dal_jax.tasks._base import register_task
from dal_jax.tasks.classification import CLASSIFICATION

__all__ = ["CLASSIFICATION", "TASKS", "Task", "get_task", "register_task"]
