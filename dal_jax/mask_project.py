"""Segmentation projects: the annotator paints masks (``dal-jax init --task segmentation``).

The project's steps are those of :mod:`dal_jax.project`; what differs is what an answer is:

* ``query`` writes, besides ``queries/query_NNN.csv`` (id, path, rank, the acquisition's score,
  the model's mask), the model's mask of every queried image as an index PNG in
  ``queries/query_NNN_predicted/<name>.png`` (copy it into ``query_NNN_answers/`` and correct it in
  any paint tool), and ``query_NNN_tasks.json``: Label Studio tasks with the model's mask as a
  brush pre-annotation, for the labeling config in ``label_config.xml`` (brush and polygon
  tools over the classes).
* ``ingest`` reads a folder of PNG index masks named like the images (``a.jpg`` -> ``a.png``) (pixel value = class index, 255 = not
  labeled) or a Label Studio JSON export with brush and polygon results (pixels nobody painted
  are the first class, the background). Every mask is checked before anything is written: its
  size is the pool's, its values are classes (or 255), its ID is a pool item; a bad one is
  refused with one line naming the file (or task) and nothing changes.
* A mask is kept in the project database as a palette PNG (the label log names it by its
  digest), so an answer ingested twice changes nothing, and ``export`` writes it back byte for
  byte (``export/labels/<name>.png``) beside the model's masks of every item
  (``export/masks/<name>.png``) and the model.
* ``status`` estimates the mean IoU by cross-validation on the labeled masks.

The first class is the background (what unpainted pixels of a Label Studio answer are).
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

from dal_jax import learner as learner_lib
from dal_jax import loop as loop_lib
from dal_jax import mask_answers
from dal_jax import masks as masks_lib
from dal_jax import project as project_lib
from dal_jax import streaming
from dal_jax import tasks as tasks_lib


def _key(png: bytes) -> str:
  return "mask/" + hashlib.sha256(png).hexdigest()[:32]


class MaskProject(project_lib.Project):
  """A project whose answers are masks (see the module docs)."""

  _masks: dict[str, np.ndarray]

  def _shape(self) -> tuple[int, int]:
    h, w = self.meta["pool"]["image_size"]
    return int(h), int(w)

  def _label_shape(self) -> tuple[int, ...]:
    return self._shape()

  def _label_value(self, label: str) -> np.ndarray:
    cache = self.__dict__.setdefault("_masks", {})
    if label not in cache:
      png = self.db.blob(label)
      if png is None:
        raise ValueError(f"{self.db.path}: the label log names mask {label!r}, which the "
                         "database does not hold; restore the project folder from a backup")
      from PIL import Image
      with Image.open(io.BytesIO(png)) as img:
        arr = np.asarray(img, np.uint8)
      cache[label] = np.where(arr == masks_lib.NOT_LABELED, -1, arr.astype(np.int32))
    return cache[label]

  # ---- answers

  def _read_answers(self, file: str):
    ids, shape = set(self.pool.ids), self._shape()
    if os.path.isdir(file):
      found = [(path, item_id, mask) for path, item_id, mask in
               mask_answers.png_answers(file, self.classes, shape, ids)]
    elif os.path.isfile(file) and (file.endswith(".json")):
      found = list(_label_studio_masks(file, self.classes, shape, ids))
    elif os.path.isfile(file):
      raise ValueError(f"{file}: mask answers are a folder of PNG index masks or a Label "
                       "Studio JSON export")
    else:
      raise ValueError(f"answers {file!r} do not exist")
    answers: dict[str, tuple[str | None, str]] = {}
    blobs: dict[str, bytes] = {}
    pending, labels = self.meta["pending"], self.labels()
    from_label_studio = not os.path.isdir(file)
    for where, item_id, mask in found:
      if mask is None:
        answers[item_id] = (None, where)
        continue
      inside = self._inside(item_id, pending)
      if inside is not None:  # a window query: the answer fills the windows of the mask so far
        if from_label_studio:  # (unpainted pixels outside the windows are not answers)
          mask = np.where(inside, mask, -1)
        elif (mask[~inside] >= 0).any():
          raise ValueError(f"{where}: {item_id!r} was asked for the windows "
                           f"{pending['regions'][item_id]} (top, left, bottom, right) only, and "
                           "the mask labels pixels outside them; set those to 255")
        before = (self._label_value(labels[item_id]) if item_id in labels
                  else np.full(self._shape(), -1, np.int32))
        mask = np.where(inside, mask, before)
      if not (mask >= 0).any():
        raise ValueError(f"{where}: the mask of {item_id!r} labels no pixel (all 255); mark "
                         "the item skipped instead")
      png = mask_answers.mask_png(mask)
      answers[item_id] = (_key(png), where)
      blobs[_key(png)] = png
    return answers, blobs

  def _after_answers(self, pending, labels, events) -> bytes | None:
    _, method, _ = self._build()
    if any(h.after_answers is not None for h in method.hooks):
      raise ValueError(f"method {method.name!r} learns from answers as classes; a segmentation "
                       "project cannot run it")
    return None

  # ---- queries

  def _predicted_masks(self, learner, variables, x) -> np.ndarray:
    """``[n, H, W]`` the (ensemble's) mean prediction's class per pixel, deterministic."""
    from dal_jax import acquisition as acq_lib

    lp = learner.predict(variables, jnp.asarray(streaming.materialize(x))).log_probs
    lp = acq_lib.mean_log_probs(learner_lib.ensemble_log_probs(lp))
    return np.asarray(jnp.argmax(lp, axis=-1), np.int32)

  def _query_rows(self, learner, variables, x_pool, q) -> list[tuple]:
    """``(position, score, the model's mask, window or None)`` per queried image or window."""
    if q.regions is not None and q.regions.ndim != 2:
      raise ValueError("projects query whole images or windows; region_shape='superpixel' runs "
                       "in simulated experiments only")
    masks = self._predicted_masks(learner, variables, x_pool[np.asarray(q.indices)])
    scores = [None] * len(q.indices) if q.scores is None else [float(v) for v in q.scores]
    regions = [None] * len(q.indices) if q.regions is None else q.regions.tolist()
    return [(int(j), score, m, r) for j, score, m, r in zip(q.indices, scores, masks, regions)]

  def _pending_regions(self, rows) -> dict[str, Any]:
    windows: dict[str, list] = {}
    for j, _, _, region in rows:
      if region is not None:
        windows.setdefault(self.pool.ids[j], []).append([int(v) for v in region])
    return {"regions": windows} if windows else {}

  def _inside(self, item_id: str, pending) -> np.ndarray | None:
    """``[H, W]`` the pixels of ``item_id``'s queried windows, or None when the pending query
    (if any) asks for the whole image."""
    windows = ((pending or {}).get("regions") or {}).get(item_id)
    if not windows:
      return None
    return loop_lib.region_masks(np.asarray(windows), self._shape()).any(axis=0)

  def _write_query(self, qnum: int, rows) -> str:
    pool = self.pool
    stem = self._file("queries", f"query_{qnum:03d}")
    os.makedirs(self._file("queries"), exist_ok=True)
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["id", "path", "rank", "score", "predicted_mask", "answer", "region"])
    asked = self._pending_regions(rows)  # the windows of a window query, per image
    inside = {item_id: self._inside(item_id, asked) for item_id in asked.get("regions", {})}
    tasks, written = [], set()
    for rank, (j, score, mask, *region) in enumerate(rows, 1):
      item_id = pool.ids[j]
      region = region[0] if region else None
      if item_id in inside and mask is not None:  # only the queried windows are asked for
        mask = np.where(inside[item_id], mask, -1)
      predicted = ""
      if mask is not None:
        predicted = os.path.join(f"query_{qnum:03d}_predicted",
                                 mask_answers.answer_name(item_id))
        path = os.path.join(os.path.dirname(stem), predicted)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        project_lib.atomic_write(path, mask_answers.mask_png(mask))
      w.writerow([item_id, pool.paths[j], rank, "" if score is None else f"{score:.6f}",
                  predicted, os.path.join(f"query_{qnum:03d}_answers",
                                          mask_answers.answer_name(item_id)),
                  "" if region is None else ",".join(str(v) for v in region)])
      if item_id in written:  # one Label Studio task per image, however many windows
        continue
      written.add(item_id)
      task = {"data": {"image": project_lib._data_uri(streaming.materialize(pool.x[j])),
                       "item_id": item_id, "path": pool.paths[j], "rank": rank,
                       "query": qnum}}
      if item_id in inside:
        boxes = [r[3] for r in rows if pool.ids[r[0]] == item_id]
        task["data"]["regions"] = "; ".join(",".join(str(v) for v in b) for b in boxes)
      if mask is not None:
        task["predictions"] = [{"model_version": f"dal_jax query {qnum}",
                                "result": mask_answers.mask_results(mask, self.classes)}]
      tasks.append(task)
    os.makedirs(stem + "_answers", exist_ok=True)
    project_lib.atomic_write(stem + ".csv", out.getvalue().encode())
    project_lib._write_json(stem + "_tasks.json", tasks)
    self._say(f"paint the masks into {self._rel(stem + '_answers')}/ (index PNGs: pixel "
              "value = class, 255 = not labeled; the model's masks are in "
              f"{self._rel(stem + '_predicted')}) or label the tasks file in Label Studio, "
              "then ingest the folder or the export")
    return stem + ".csv"

  # ---- status and export

  def _labeled(self) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The labeled IDs (sorted), their positions and their masks ``[n, H, W]``."""
    labels = self.labels()
    index = {i: n for n, i in enumerate(self.pool.ids)}
    ids = sorted(labels)
    masks = np.stack([self._label_value(labels[i]) for i in ids]) if ids else np.zeros(
        (0, *self._shape()), np.int32)
    return ids, np.array([index[i] for i in ids], np.int64), masks

  def status(self, *, folds: int = 5, plot: bool = True) -> dict[str, Any]:
    """Labeled images and pixels, the pixels of each class, the pending query, and the mean IoU
    estimated by ``folds``-fold cross-validation on the labeled masks (appended to the history,
    plotted in ``status.png``)."""
    pool, meta = self.pool, self.meta
    ids, positions, masks = self._labeled()
    counts = np.bincount(masks[masks >= 0].reshape(-1), minlength=len(self.classes))
    changes = meta.get("pool_changes", [])
    out = {"pool": len(pool.ids), "labeled": len(ids), "labeled_pixels": int((masks >= 0).sum()),
           "classes": {c: int(v) for c, v in zip(self.classes, counts)},
           "round": meta["round"],
           "pending": len(meta["pending"]["ids"]) if meta["pending"] else 0,
           "skipped_files": len(pool.skipped),
           "pool_changes": changes[-1] if changes else None, "cv_miou": None}
    if len(ids) >= 2 * folds and (counts > 0).sum() >= 2:
      out["cv_miou"] = self._cross_validate_miou(positions, masks, folds)
      history = [h for h in meta.get("history", []) if h["labeled"] != len(ids)]
      history += [{"labeled": len(ids), "cv_accuracy": out["cv_miou"],
                   "time": project_lib._now()}]
      self.db.commit(meta={"history": history})
      if plot:
        out["plot"] = self._plot(history, ylabel="cross-validated mean IoU")
    return out

  def _cross_validate_miou(self, positions, masks, folds: int) -> float:
    learner = self._plain_learner()
    x = jnp.asarray(streaming.materialize(self.pool.x[positions]))
    fold = np.asarray(jax.random.permutation(jax.random.key(0), len(positions))) % folds
    train = np.stack([fold != f for f in range(folds)])
    fit = learner.fit(x, jnp.asarray(masks), jnp.asarray(train),
                      keys=jax.random.split(jax.random.key(1), folds))
    lp = np.asarray(learner.predict(fit.variables, x).log_probs[:, 0])  # [folds, n, H, W, C]
    held_out = lp[fold, np.arange(len(positions))]  # each mask predicted by the fold without it
    return float(tasks_lib.get_task("segmentation").metrics(held_out, masks)["miou"])

  def export(self) -> str:
    """Trains on every labeled mask; saves the model (``export/model``, orbax) with
    ``export.json``, the model's mask of every pool item (``export/masks/<name>.png``), the
    labeled masks as ingested (``export/labels/<name>.png``), ``export/predictions.csv`` and the
    label log (``export/labels.jsonl``). Returns the folder."""
    ids, positions, masks = self._labeled()
    if not ids:
      raise ValueError("nothing is labeled yet: query and ingest first")
    pool, labels = self.pool, self.labels()
    learner, fit, out = self._export_model(positions, masks, "masks")
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["id", "path", "predicted_mask", "label_mask"])
    chunk = max(1, int(self.config.chunk_size))
    for start in range(0, len(pool.ids), chunk):
      part = np.arange(start, min(start + chunk, len(pool.ids)))
      for j, mask in zip(part, self._predicted_masks(learner, fit.variables, pool.x[part])):
        item_id = pool.ids[j]
        name = mask_answers.answer_name(item_id)
        self._write_png(os.path.join(out, "masks", name), mask_answers.mask_png(mask))
        label = ""
        if item_id in labels:
          label = os.path.join("labels", name)
          self._write_png(os.path.join(out, label), self.db.blob(labels[item_id]))
        w.writerow([item_id, pool.paths[j], os.path.join("masks", name), label])
    project_lib.atomic_write(os.path.join(out, "predictions.csv"), buf.getvalue().encode())
    log = io.StringIO()
    self.write_log(log)
    project_lib.atomic_write(os.path.join(out, "labels.jsonl"), log.getvalue().encode())
    self._say(f"exported the model, {len(pool.ids)} predicted masks and {len(ids)} labeled "
              f"masks to {self._rel(out)}")
    return out

  @staticmethod
  def _write_png(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    project_lib.atomic_write(path, data)


def _label_studio_masks(path: str, classes: list[str], shape, ids: set[str]):
  """``(where, id, mask or None for a skip)`` of a Label Studio JSON export with brush and
  polygon results."""
  with open(path, "rb") as f:
    raw = f.read()
  try:
    tasks = json.loads(raw.decode("utf-8-sig"))
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ValueError(f"{path}: not a Label Studio JSON export ({e}); a truncated file?") from None
  for where, item_id, answered in project_lib.label_studio_tasks(path, tasks, ids):
    where = f"{path}, {where}"
    if answered is None:
      yield where, item_id, None
      continue
    found = []
    for results in answered:
      try:
        mask = mask_answers.results_to_mask(results, classes, shape)
      except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
      found.append(np.zeros(shape, np.int32) if mask is None else mask)
    if any((m != found[0]).any() for m in found[1:]):
      raise ValueError(f"{where}: {len(found)} annotations of {item_id!r} disagree; keep one "
                       "in Label Studio first")
    yield where, item_id, found[0]


project_lib.PROJECT_KINDS["segmentation"] = project_lib.ProjectKind(
    MaskProject, mask_answers.label_config, {"task": "segmentation", "model": "unet"})
