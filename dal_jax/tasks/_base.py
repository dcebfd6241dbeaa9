"""The task as a unit: what a label is, the loss on it, and how predictions are judged.

A :class:`Task` is a record of pure functions passed as a value, the way a
:class:`dal_jax.methods.Method` is: the learner trains with its ``loss`` (the first loss term of
every train step; a method's loss terms wrap it or add to it), early-stops on one of its
``criteria`` and reports its ``metrics``. A new task is one file registering a ``Task`` plus a
model that outputs ``[B, ..., C]`` logits for ``[B, ...]`` labels; nothing else in the trunk
names a task.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax


class Task(NamedTuple):
  """A task's label, loss and metrics (all functions pure and jit-able unless noted).

  Attributes:
    name: registry name.
    label_shape: ``label_shape(input_shape) -> shape`` of one item's label (``()`` for a class;
      ``(H, W)`` for a mask).
    loss: ``loss(logits [B, ..., C], labels [B, ...]) -> [B]`` each item's loss (the mean over
      a batch is the train step's first loss term).
    criteria: ``(name, criterion)`` pairs, ``criterion(scores [N, ..., C], labels [N, ...]) ->
      scalar`` higher is better, for early stopping (``TrainConfig.early_stopping`` names one); ``scores`` are
      log-probabilities, or logits for criteria that only compare classes (an argmax).
    headline: the criterion reported as the validation result (``val_accuracy``) and in
      training metrics.
    metrics: ``metrics(log_probs [N, ..., C], labels [N, ...]) -> {name: float}`` on the test
      set (host code); its ``headline`` entry is what ``target_accuracy`` and the reports read.
    doc: one line for listings.
  """

  name: str
  label_shape: Callable[[tuple[int, ...]], tuple[int, ...]]
  loss: Callable[[jax.Array, jax.Array], jax.Array]
  criteria: tuple[tuple[str, Callable[[jax.Array, jax.Array], jax.Array]], ...]
  headline: str
  metrics: Callable[[Any, Any], dict[str, float]]
  doc: str = ""

  def criterion(self, name: str) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """The criterion ``name``; an unknown name raises naming the task's criteria."""
    found = dict(self.criteria)
    if name not in found:
      raise ValueError(f"task {self.name!r} has no early-stopping criterion {name!r}; valid: "
                       f"{sorted(found)}")
    return found[name]


TASKS: dict[str, Task] = {}


def register_task(task: Task, *, overwrite: bool = False) -> Task:
  """Registers ``task`` under ``task.name``; a second registration of a name is refused unless
  ``overwrite``."""
  if task.name in TASKS and not overwrite:
    raise ValueError(f"task {task.name!r} is already registered; pass overwrite=True to replace it")
  TASKS[task.name] = task
  return task


def get_task(name: str) -> Task:
  """The registered task ``name``; an unknown name raises naming the valid ones."""
  if name not in TASKS:
    raise ValueError(f"unknown task {name!r}; valid: {sorted(TASKS)}")
  return TASKS[name]
