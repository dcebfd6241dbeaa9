"""Detection projects (``dal-jax init --task detection``): queries write COCO JSON and Label
Studio rectangle tasks, COCO and Label Studio answers are read back (scaled, checked), bad boxes
are refused with the label log unchanged, and status / export report and write boxes."""

import csv
import json
import os

import numpy as np
import pytest
from PIL import Image

from dal_jax import box_answers
from dal_jax import project as project_lib
from dal_jax import tool

SETTINGS = ["--set", "train.max_steps=4", "--set", "models.centernet.width=2",
            "--set", "pool_subsample=0"]


def _pool(root, n=14):
  """16x16 images with one bright 6x6 square (class "bright") or a dim one ("dim") each."""
  os.makedirs(root)
  rng = np.random.default_rng(0)
  truth = {}
  for i in range(n):
    a = np.zeros((16, 16), np.uint8)
    top, left = (int(v) for v in rng.integers(0, 10, 2))
    cls = i % 2
    a[top:top + 6, left:left + 6] = 250 if cls == 0 else 120
    name = f"im{i:02d}.png"
    Image.fromarray(a).save(os.path.join(root, name))
    truth[name] = [cls, top, left, top + 6, left + 6]
  return truth


def _cli(*argv):
  assert tool.run(["--quiet", *map(str, argv)]) == 0


def _coco_answer(ids, truth, *, scale=1):
  """A COCO answer in images of 16·scale pixels (the pool resizes to 16)."""
  images, anns = [], []
  for n, item_id in enumerate(ids, 1):
    images.append({"id": n, "file_name": item_id, "width": 16 * scale, "height": 16 * scale})
    c, top, left, bottom, right = truth[item_id]
    anns.append({"id": n, "image_id": n, "category_id": 10 + c,
                 "bbox": [left * scale, top * scale, (right - left) * scale,
                          (bottom - top) * scale]})
  return {"images": images, "annotations": anns,
          "categories": [{"id": 10, "name": "bright"}, {"id": 11, "name": "dim"}]}


def test_detection_project_round_trips_boxes_and_refuses_bad_ones(tmp_path):
  truth = _pool(str(tmp_path / "imgs"))
  proj = tmp_path / "proj"
  _cli("init", proj, "--pool", tmp_path / "imgs", "--classes", "bright,dim", "--task",
       "detection", "--image-size", "16x16", *SETTINGS, "--data-dir", tmp_path / "tfds")
  assert "<RectangleLabels" in (proj / "label_config.xml").read_text()
  _cli("query", proj, "-k", "6")
  q1 = proj / "queries" / "query_001"
  ids = [r["id"] for r in csv.DictReader(open(f"{q1}.csv"))]
  coco = json.loads(open(f"{q1}_coco.json").read())
  assert [im["file_name"] for im in coco["images"]] == ids and coco["annotations"] == []

  def log():
    with project_lib.open_project(str(proj), progress=False) as p:
      return p.events()

  before = log()
  answer = tmp_path / "answer.json"
  others = sorted(set(truth) - set(ids))
  bad_cases = [
      (lambda a: a["annotations"][0].update(bbox=[30, 0, 4, 4]), "leaves the 32x32 image"),
      (lambda a: a["annotations"][0].update(bbox=[2, 2, 0, 4]), "no positive size"),
      (lambda a: a["annotations"][0].update(category_id=99), "category_id 99 is not"),
      (lambda a: a["categories"].append({"id": 12, "name": "cat"}), "'cat' is not a class"),
      (lambda a: a["images"][0].update(file_name=others[0]), "was not queried"),
      (lambda a: a["images"][0].update(file_name="nope.png"), "not a pool item"),
  ]
  for change, message in bad_cases:
    a = _coco_answer(ids, truth, scale=2)
    change(a)
    answer.write_text(json.dumps(a))
    with pytest.raises(ValueError, match=message):
      with project_lib.open_project(str(proj), progress=False) as p:
        p.ingest(str(answer))
    assert log() == before  # nothing was written
  answer.write_text('{"images": [')
  assert tool.run(["--quiet", "ingest", str(proj), str(answer)]) == 2

  answer.write_text(json.dumps(_coco_answer(ids, truth, scale=2)))
  _cli("ingest", proj, answer)
  with project_lib.open_project(str(proj), progress=False) as p:
    labels = p.labels()
    for item_id in ids:  # scaled back to the pool's 16x16 pixels
      assert p._rows(labels[item_id]).tolist() == [truth[item_id]]
      np.testing.assert_array_equal(p._label_value(labels[item_id])[1], [-1, 0, 0, 0, 0])
    n_events = len(p.events())
  _cli("ingest", proj, answer)  # the same answers again change nothing
  assert len(log()) == n_events

  _cli("query", proj, "-k", "4")  # trains the detector, ranks by box entropy
  q2 = proj / "queries" / "query_002"
  ids2 = [r["id"] for r in csv.DictReader(open(f"{q2}.csv"))]
  assert len(set(ids2)) == 4 and not set(ids2) & set(ids)
  tasks = json.loads(open(f"{q2}_tasks.json").read())
  assert [t["data"]["item_id"] for t in tasks] == ids2
  assert all(t["predictions"][0]["model_version"] == "dal_jax query 2" for t in tasks)
  # Label Studio answers: rectangles in percent; the last task skipped; a rotated one refused.
  export = []
  for t in tasks[:-1]:
    c, top, left, bottom, right = truth[t["data"]["item_id"]]
    export.append({"id": len(export) + 1, "data": t["data"], "annotations": [{"result": [
        {"type": "rectanglelabels", "from_name": "label", "to_name": "image",
         "value": {"x": left / 16 * 100, "y": top / 16 * 100, "width": (right - left) / 16 * 100,
                   "height": (bottom - top) / 16 * 100, "rotation": 0,
                   "rectanglelabels": [["bright", "dim"][c]]}}]}]})
  export.append({"id": 9, "data": tasks[-1]["data"], "annotations": [{"was_cancelled": True}]})
  rotated = json.loads(json.dumps(export))
  rotated[0]["annotations"][0]["result"][0]["value"]["rotation"] = 15
  answer.write_text(json.dumps(rotated))
  before = log()
  with pytest.raises(ValueError, match="task 1, result 0: a rotated rectangle"):
    with project_lib.open_project(str(proj), progress=False) as p:
      p.ingest(str(answer))
  assert log() == before
  answer.write_text(json.dumps(export))
  _cli("ingest", proj, answer)
  with project_lib.open_project(str(proj), progress=False) as p:
    labels = p.labels()
    assert sorted(labels) == sorted(ids + ids2[:-1])
    for item_id in ids2[:-1]:
      assert p._rows(labels[item_id]).tolist() == [truth[item_id]]
    status = p.status(folds=2, plot=False)
  assert status["labeled"] == 9 and status["boxes"] == 9
  assert sum(status["classes"].values()) == 9 and 0.0 <= status["cv_map50"] <= 1.0

  _cli("export", proj)
  out = proj / "export"
  predictions = json.loads((out / "predictions.json").read_text())
  assert len(predictions["images"]) == len(truth)
  assert all(0.3 <= a["score"] <= 1 for a in predictions["annotations"])
  exported = json.loads((out / "labels.json").read_text())
  by_name = {im["id"]: im["file_name"] for im in exported["images"]}
  for a in exported["annotations"]:
    c, top, left, bottom, right = truth[by_name[a["image_id"]]]
    assert a["bbox"] == [left, top, right - left, bottom - top] and a["category_id"] == c + 1
  model = project_lib.load_model(str(proj))
  boxes = model.predict([str(tmp_path / "imgs" / "im00.png")])
  assert len(boxes) == 1 and all(b["class"] in ("bright", "dim") for b in boxes[0])


def test_rectangle_results_round_trip():
  rows = [[1, 2, 3, 10, 12], [0, 0, 0, 16, 16]]
  results = box_answers.rectangle_results(rows, ["a", "b"], (16, 16))
  assert box_answers.rectangle_rows(results, ["a", "b"], (16, 16), where="t") == rows
