"""Detection projects: the annotator draws boxes (``dal-jax init --task detection``).

The project's steps are those of :mod:`dal_jax.project`; what differs is what an answer is
(:mod:`dal_jax.box_answers`):

* ``query`` writes ``queries/query_NNN.csv`` (id, path, rank, the acquisition's score, the
  number of boxes the model predicts), ``query_NNN_coco.json`` (the queried images with the
  model's boxes as annotations, each with its ``score``: correct it in any COCO tool and ingest
  it) and ``query_NNN_tasks.json`` (Label Studio tasks with the model's boxes as rectangle
  pre-annotations, for the RectangleLabels config in ``label_config.xml``). Boxes the model
  scores below :data:`PREDICTION_THRESHOLD` are left out.
* ``ingest`` reads a COCO JSON or a Label Studio JSON export with rectangles. Only the pending
  query's images (or images labeled before: a correction) may be answered. Every box is checked
  before anything is written (a known class, positive size, inside the image); a bad one is
  refused with one line naming the file, the image and the box, and nothing changes. An image
  answered without boxes is labeled "no object".
* An image's boxes are kept in the project database as a JSON blob named by its digest in the
  label log, so an answer ingested twice changes nothing.
* ``status`` reports the boxes per class and a cross-validated COCO mAP@0.5; ``export`` writes
  the model, the model's boxes of every pool image as COCO JSON (``export/predictions.json``)
  and the labeled boxes (``export/labels.json``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dal_jax import box_answers
from dal_jax import learner as learner_lib
from dal_jax import project as project_lib
from dal_jax import streaming
from dal_jax.tasks import detection as det

PREDICTION_THRESHOLD = 0.3  # the model's boxes written as pre-annotations score at least this
MAX_BOXES = 64  # boxes per image a project holds (the loop's labels are [N, MAX_BOXES, 5])


def _encode(rows: list) -> bytes:
  return json.dumps({"boxes": [[int(v) for v in r] for r in rows]}).encode()


def _key(blob: bytes) -> str:
  return "boxes/" + hashlib.sha256(blob).hexdigest()[:32]


class BoxProject(project_lib.Project):
  """A project whose answers are boxes (see the module docs)."""

  def _shape(self) -> tuple[int, int]:
    h, w = self.meta["pool"]["image_size"]
    return int(h), int(w)

  def _rows(self, label: str) -> np.ndarray:
    cache = self.__dict__.setdefault("_boxes", {})
    if label not in cache:
      blob = self.db.blob(label)
      if blob is None:
        raise ValueError(f"{self.db.path}: the label log names boxes {label!r}, which the "
                         "database does not hold; restore the project folder from a backup")
      cache[label] = np.asarray(json.loads(blob)["boxes"], np.int32).reshape(-1, 5)
    return cache[label]

  def _label_shape(self) -> tuple[int, ...]:
    return (MAX_BOXES, 5)

  def _label_value(self, label: str) -> np.ndarray:
    return det.pad_boxes(self._rows(label)[None], MAX_BOXES)[0]

  # ---- answers

  def _resolver(self):
    pool = self.pool
    by_id = set(pool.ids)
    by_path = {p: i for i, p in zip(pool.ids, pool.paths)}
    return lambda name: name if name in by_id else by_path.get(name)

  def _read_answers(self, file: str):
    shape = self._shape()
    if not (os.path.isfile(file) and file.endswith(".json")):
      raise ValueError(f"{file}: box answers are a COCO JSON file or a Label Studio JSON export"
                       if os.path.exists(file) else f"answers {file!r} do not exist")
    obj = box_answers.load_json(file, "COCO or Label Studio")
    if box_answers.is_coco(obj):
      found = list(box_answers.coco_answers(file, obj, self.classes, shape, self._resolver()))
    else:
      found = list(_label_studio_boxes(file, obj, self.classes, shape, set(self.pool.ids)))
    pending = self.meta["pending"]
    allowed = set(pending["ids"] if pending else ()) | set(self.labels())
    answers: dict[str, tuple[str | None, str]] = {}
    blobs: dict[str, bytes] = {}
    for where, item_id, rows in found:
      if item_id not in allowed:
        raise ValueError(f"{where}: {item_id!r} was not queried ("
                         + (f"query {pending['query']:03d} asks for {len(pending['ids'])} "
                            "other images" if pending else "no query is pending")
                         + "); answer the queried images only")
      if rows is None:
        answers[item_id] = (None, where)
        continue
      if len(rows) > MAX_BOXES:
        raise ValueError(f"{where}: {len(rows)} boxes on {item_id!r}; a project holds at most "
                         f"{MAX_BOXES} per image")
      blob = _encode(rows)
      answers[item_id] = (_key(blob), where)
      blobs[_key(blob)] = blob
    return answers, blobs

  def _after_answers(self, pending, labels, events) -> bytes | None:
    _, method, _ = self._build()
    if any(h.after_answers is not None for h in method.hooks):
      raise ValueError(f"method {method.name!r} learns from answers as classes; a detection "
                       "project cannot run it")
    return None

  # ---- queries

  def _detections(self, learner, variables, x) -> list[tuple[list, list]]:
    """Per image: the (ensemble's) boxes scoring at least the threshold as ``(rows,
    scores)``."""
    pred = learner.predict(variables, jnp.asarray(streaming.materialize(x)),
                           outputs=("box_regression",))
    lp = learner_lib.ensemble_log_probs(pred.log_probs)
    from dal_jax import acquisition as acq_lib
    d = det.decode(acq_lib.mean_log_probs(lp), jnp.mean(pred.outputs["box_regression"], 0))
    out = []
    for scores, classes, boxes in zip(*(np.asarray(a) for a in d)):
      keep = scores >= PREDICTION_THRESHOLD
      rows = [[int(c), *(int(round(float(v))) for v in b)]
              for c, b in zip(classes[keep], boxes[keep])]
      good = [n for n, r in enumerate(rows) if r[3] > r[1] and r[4] > r[2]]
      out.append(([rows[n] for n in good], [float(scores[keep][n]) for n in good]))
    return out

  def _query_rows(self, learner, variables, x_pool, q) -> list[tuple]:
    """``(position, score, (boxes, their scores))`` per queried image."""
    if q.regions is not None:
      raise ValueError("detection projects query whole images")
    dets = self._detections(learner, variables, x_pool[np.asarray(q.indices)])
    scores = [None] * len(q.indices) if q.scores is None else [float(v) for v in q.scores]
    return [(int(j), s, d) for j, s, d in zip(q.indices, scores, dets)]

  def _write_query(self, qnum: int, rows) -> str:
    pool, shape = self.pool, self._shape()
    stem = self._file("queries", f"query_{qnum:03d}")
    os.makedirs(self._file("queries"), exist_ok=True)
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["id", "path", "rank", "score", "predicted_boxes"])
    tasks, items = [], []
    for rank, (j, score, predicted, *_) in enumerate(rows, 1):  # (cold start: 4 fields)
      item_id = pool.ids[j]
      boxes, box_scores = predicted if predicted is not None else ([], [])
      w.writerow([item_id, pool.paths[j], rank, "" if score is None else f"{score:.6f}",
                  "" if predicted is None else len(boxes)])
      items.append((item_id, boxes, box_scores))
      task = {"data": {"image": project_lib._data_uri(streaming.materialize(pool.x[j])),
                       "item_id": item_id, "path": pool.paths[j], "rank": rank,
                       "query": qnum}}
      if predicted is not None:
        task["predictions"] = [{"model_version": f"dal_jax query {qnum}", "result":
                                box_answers.rectangle_results(boxes, self.classes, shape,
                                                              box_scores)}]
      tasks.append(task)
    project_lib.atomic_write(stem + ".csv", out.getvalue().encode())
    project_lib._write_json(stem + "_coco.json",
                            box_answers.coco_file(items, self.classes, shape))
    project_lib._write_json(stem + "_tasks.json", tasks)
    self._say(f"correct the boxes in {self._rel(stem + '_coco.json')} (the model's, COCO "
              "JSON; an image without annotations means no object) or label the tasks file in "
              "Label Studio, then ingest the file or the export")
    return stem + ".csv"

  # ---- status and export

  def _labeled(self):
    """The labeled IDs (sorted), their positions and their padded rows ``[n, B, 5]``."""
    labels = self.labels()
    index = {i: n for n, i in enumerate(self.pool.ids)}
    ids = sorted(labels)
    rows = (np.stack([self._label_value(labels[i]) for i in ids]) if ids
            else np.zeros((0, MAX_BOXES, 5), np.int32))
    return ids, np.array([index[i] for i in ids], np.int64), rows

  def status(self, *, folds: int = 5, plot: bool = True) -> dict[str, Any]:
    """Labeled images and boxes, the boxes of each class, the pending query, and COCO
    mAP@0.5 estimated by ``folds``-fold cross-validation on the labeled images (appended to
    the history, plotted in ``status.png``)."""
    meta = self.meta
    ids, positions, rows = self._labeled()
    cls = rows[..., 0]
    counts = np.bincount(cls[cls >= 0], minlength=len(self.classes))
    changes = meta.get("pool_changes", [])
    out = {"pool": len(self.pool.ids), "labeled": len(ids), "boxes": int((cls >= 0).sum()),
           "classes": {c: int(v) for c, v in zip(self.classes, counts)},
           "round": meta["round"],
           "pending": len(meta["pending"]["ids"]) if meta["pending"] else 0,
           "skipped_files": len(self.pool.skipped),
           "pool_changes": changes[-1] if changes else None, "cv_map50": None}
    if len(ids) >= 2 * folds and (counts > 0).any():
      out["cv_map50"] = self._cross_validate_map(positions, rows, folds)
      history = [h for h in meta.get("history", []) if h["labeled"] != len(ids)]
      history += [{"labeled": len(ids), "cv_accuracy": out["cv_map50"],
                   "time": project_lib._now()}]
      self.db.commit(meta={"history": history})
      if plot:
        out["plot"] = self._plot(history, ylabel="cross-validated mAP@0.5")
    return out

  def _cross_validate_map(self, positions, rows, folds: int) -> float:
    learner = self._plain_learner()
    x = jnp.asarray(streaming.materialize(self.pool.x[positions]))
    fold = np.asarray(jax.random.permutation(jax.random.key(0), len(positions))) % folds
    train = np.stack([fold != f for f in range(folds)])
    fit = learner.fit(x, jnp.asarray(rows), jnp.asarray(train),
                      keys=jax.random.split(jax.random.key(1), folds))
    pred = learner.predict(fit.variables, x, outputs=("box_regression",))
    n = np.arange(len(positions))
    lp = np.asarray(pred.log_probs[:, 0])[fold, n]  # each image by the fold without it
    reg = np.asarray(pred.outputs["box_regression"])[fold, n]
    return float(det.metrics(lp, rows, box_regression=reg)["map50"])

  def export(self) -> str:
    """Trains on every labeled image; saves the model (``export/model``, orbax) with
    ``export.json``, the model's boxes of every pool image (``export/predictions.json``, COCO
    with scores), the labeled boxes (``export/labels.json``, COCO) and the label log
    (``export/labels.jsonl``). Returns the folder."""
    ids, positions, rows = self._labeled()
    if not ids:
      raise ValueError("nothing is labeled yet: query and ingest first")
    pool, shape = self.pool, self._shape()
    learner, fit, out = self._export_model(positions, rows, "images")
    items = []
    chunk = max(1, int(self.config.chunk_size))
    for start in range(0, len(pool.ids), chunk):
      part = np.arange(start, min(start + chunk, len(pool.ids)))
      for j, (boxes, scores) in zip(part, self._detections(learner, fit.variables,
                                                            pool.x[part])):
        items.append((pool.ids[j], boxes, scores))
    project_lib._write_json(os.path.join(out, "predictions.json"),
                            box_answers.coco_file(items, self.classes, shape))
    labels = self.labels()
    project_lib._write_json(os.path.join(out, "labels.json"), box_answers.coco_file(
        [(i, self._rows(labels[i]).tolist(), None) for i in ids], self.classes, shape))
    log = io.StringIO()
    self.write_log(log)
    project_lib.atomic_write(os.path.join(out, "labels.jsonl"), log.getvalue().encode())
    self._say(f"exported the model, the boxes of {len(pool.ids)} images and {len(ids)} labeled "
              f"images to {self._rel(out)}")
    return out


def _label_studio_boxes(path: str, tasks, classes: list[str], shape, ids: set[str]):
  """``(where, id, rows or None for a skip)`` of a Label Studio JSON export with rectangles."""
  if not isinstance(tasks, (list, dict)):
    raise ValueError(f"{path}: neither a COCO file (images, annotations) nor a Label Studio "
                     "export (a list of tasks)")
  for where, item_id, answered in project_lib.label_studio_tasks(path, tasks, ids):
    where = f"{path}, {where}"
    if answered is None:
      yield where, item_id, None
      continue
    found = [sorted(box_answers.rectangle_rows(results, classes, shape, where=where))
             for results in answered]
    if any(f != found[0] for f in found[1:]):
      raise ValueError(f"{where}: {len(found)} annotations of {item_id!r} disagree; keep one "
                       "in Label Studio first")
    yield where, item_id, found[0]


def predict_boxes(exported, outputs) -> list[list[dict]]:
  """An exported detector's boxes per image: ``{"class", "score", "box": [top, left, bottom,
  right]}`` scoring at least the threshold, best first."""
  d = det.decode_outputs(outputs)
  out = []
  for scores, classes, boxes in zip(*(np.asarray(a) for a in d)):
    out.append([{"class": exported.classes[int(c)], "score": float(s),
                 "box": [float(v) for v in b]}
                for s, c, b in zip(scores, classes, boxes) if s >= PREDICTION_THRESHOLD])
  return out


project_lib.PROJECT_KINDS["detection"] = project_lib.ProjectKind(
    BoxProject, box_answers.label_config,
    {"task": "detection", "model": "centernet", "acquisition": "box_entropy",
     "train.early_stopping": "loss"}, predict=predict_boxes)
