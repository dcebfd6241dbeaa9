"""The task as a unit: what a label is, the loss on it, and how predictions are judged.

A :class:`Task` is a record of pure functions passed as a value, the way a
:class:`dal_jax.methods.Method` is: the learner trains with its ``loss`` (the first loss term of
every train step; a method's loss terms wrap it or add to it), early-stops on one of its
``criteria`` and reports its ``metrics``. A new task is one file registering a ``Task`` plus a
model. The trunk reads a model's outputs only through the task: ``log_probs`` turns them into
the per-element class log-probabilities that acquisitions score (a detector's outputs also hold
box regressions), the ``loss`` and ``criteria`` take the raw outputs, and ``metrics`` reads the
mean log-probabilities plus any named model outputs it asks for (``metric_outputs``). Nothing
else in the trunk names a task.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax


class Task(NamedTuple):
  """A task's label, loss and metrics (all functions pure and jit-able unless noted).

  Attributes:
    name: registry name.
    label_shape: ``label_shape(input_shape) -> shape`` of one item's label (``()`` for a class;
      ``(H, W)`` for a mask; ``(None, 5)`` for a detector's padded box rows: None is any size).
    loss: ``loss(outputs [B, ...], labels [B, ...]) -> [B]`` each item's loss from the model's
      raw outputs (the mean over a batch is the train step's first loss term).
    criteria: ``(name, criterion)`` pairs, ``criterion(outputs [N, ...], labels [N, ...]) ->
      scalar`` higher is better, for early stopping (``TrainConfig.early_stopping`` names one).
      ``outputs`` are the raw outputs; a criterion must give the same value on
      ``log_probs(outputs)`` where that is also a valid output (classification and
      segmentation, whose log-softmax is idempotent). The first criterion is reported as the
      validation result (``val_accuracy``) and in training metrics.
    headline: the ``metrics`` entry that ``target_accuracy`` and the reports read.
    metrics: ``metrics(log_probs [N, ..., C], labels [N, ...], **outputs) -> {name: float}`` on
      the test set (host code); ``outputs`` are the ``metric_outputs`` named below, the mean over
      a stack's models.
    doc: one line for listings.
    log_probs: ``log_probs(outputs) -> [..., C]`` the per-element class log-probabilities the
      acquisitions read (``jax.nn.log_softmax`` of the logits for the dense tasks).
    metric_outputs: names of model ``aux`` entries ``metrics`` reads besides the log-probs.
    regions: whether the loop may query regions of an item (windows, superpixels of an image).
    label_classes: ``label_classes(labels [N, ...]) -> [N, ...]`` the entries of labels that are
      classes (all of them but for a detector's box rows, whose first column is the class);
      host code, for label checks and class histograms.
  """

  name: str
  label_shape: Callable[[tuple[int, ...]], tuple[int, ...]]
  loss: Callable[[jax.Array, jax.Array], jax.Array]
  criteria: tuple[tuple[str, Callable[[jax.Array, jax.Array], jax.Array]], ...]
  headline: str
  metrics: Callable[[Any, Any], dict[str, float]]
  doc: str = ""
  log_probs: Callable[[jax.Array], jax.Array] = jax.nn.log_softmax
  metric_outputs: tuple[str, ...] = ()
  regions: bool = False
  label_classes: Callable[[Any], Any] = lambda labels: labels

  @property
  def validation_criterion(self) -> str:
    """The criterion reported as ``val_accuracy`` (the first one)."""
    return self.criteria[0][0]

  def check_labels(self, input_shape, labels_shape) -> None:
    """Raises one line when ``labels_shape`` (``[N, ...]``) is not the task's label shape for
    inputs shaped ``input_shape`` (one item's)."""
    want = tuple(self.label_shape(tuple(input_shape)))
    got = tuple(labels_shape[1:])
    if len(got) != len(want) or any(w is not None and w != g for w, g in zip(want, got)):
      dims = "".join(f", {'B' if d is None else d}" for d in want)
      raise ValueError(f"labels must be shaped [N{dims}] for the {self.name} task, got "
                       f"{tuple(labels_shape)}")

  def criterion(self, name: str) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """The criterion ``name``; an unknown name raises naming the task's criteria."""
    found = dict(self.criteria)
    if name not in found:
      raise ValueError(f"task {self.name!r} has no early-stopping criterion {name!r}; valid: "
                       f"{sorted(found)} (or 'none' in TrainConfig.early_stopping: no early stopping)")
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
