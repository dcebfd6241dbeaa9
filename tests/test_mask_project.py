"""Segmentation projects: Label Studio's brush RLE against hand-built codes, polygons and brush
results as masks, and `dal-jax` with masks (PNG folders and Label Studio exports in, checked;
masks out byte for byte)."""

import csv
import json
import os

import numpy as np
import pytest
from PIL import Image

from dal_jax import mask_answers as ma
from dal_jax import project as project_lib
from dal_jax import tool


def _bits_to_bytes(bits: str) -> list[int]:
  bits += "0" * (-len(bits) % 8)
  return [int(bits[i:i + 8], 2) for i in range(0, len(bits), 8)]


def test_rle_decodes_a_hand_built_code_and_round_trips(rng):
  # 6 values: a repeat block of four 5s (3-bit length field), a literal block of 7, 9.
  header = format(6, "032b") + format(7, "05b") + "".join(format(s - 1, "04b")
                                                          for s in (3, 4, 8, 16))
  body = ("1" + "00" + format(3, "03b") + format(5, "08b")
          + "0" + "00" + format(1, "03b") + format(7, "08b") + format(9, "08b"))
  np.testing.assert_array_equal(ma.rle_decode(_bits_to_bytes(header + body)),
                                [5, 5, 5, 5, 7, 9])
  for n in (0, 1, 17, 70_000):
    values = np.repeat(rng.integers(0, 256, max(n // 50, 1)), 50)[:n].astype(np.uint8)
    values[rng.random(n) > 0.9] = 3
    np.testing.assert_array_equal(ma.rle_decode(ma.rle_encode(values)), values)
  # One run longer than a 16-bit length field holds splits.
  long = np.full(200_000, 255, np.uint8)
  np.testing.assert_array_equal(ma.rle_decode(ma.rle_encode(long)), long)
  code = ma.rle_encode(values)
  with pytest.raises(ValueError, match="ends early"):
    ma.rle_decode(code[:len(code) // 2])
  with pytest.raises(ValueError, match="list of byte values"):
    ma.rle_decode(["a"])
  mask = rng.random((9, 13)) > 0.6
  np.testing.assert_array_equal(ma.brush_mask(ma.brush_rle(mask), 9, 13), mask)
  with pytest.raises(ValueError, match=r"does not fit the image's 9x12 pixels"):
    ma.brush_mask(ma.brush_rle(mask), 9, 12)


def test_results_paint_brushes_and_polygons_in_order():
  classes = ["bg", "a", "b"]
  brush = np.zeros((8, 8), bool)
  brush[1:5, 1:7] = True
  results = [
      {"from_name": "label", "type": "brushlabels", "original_height": 8, "original_width": 8,
       "value": {"format": "rle", "rle": ma.brush_rle(brush), "brushlabels": ["a"]}},
      {"from_name": "label_polygon", "type": "polygonlabels",
       "value": {"points": [[0, 0], [50, 0], [50, 50], [0, 50]], "polygonlabels": ["b"]}},
      {"from_name": "comment", "type": "textarea", "value": {"text": ["ok"]}},
  ]
  want = np.zeros((8, 8), np.int32)
  want[1:5, 1:7] = 1
  want[:4, :4] = 2  # the polygon covers the pixels of [0, 4) x [0, 4) and comes later
  np.testing.assert_array_equal(ma.results_to_mask(results, classes, (8, 8)), want)
  assert ma.results_to_mask(results[2:], classes, (8, 8)) is None
  bad_class = [dict(results[0], value=dict(results[0]["value"], brushlabels=["c"]))]
  with pytest.raises(ValueError, match=r"unknown class 'c'; classes: bg, a, b"):
    ma.results_to_mask(bad_class, classes, (8, 8))
  with pytest.raises(ValueError, match=r"drawn on a 8x8 image; the pool's images are 8x16"):
    ma.results_to_mask(results[:1], classes, (8, 16))
  # The pre-annotation of a mask reads back as the mask.
  got = ma.results_to_mask(ma.mask_results(want, classes), classes, (8, 8))
  np.testing.assert_array_equal(got, want)


def _images(root, n=12):
  os.makedirs(root)
  rng = np.random.default_rng(0)
  for i in range(n):
    a = (rng.random((8, 8)) * 60).astype(np.uint8)
    a[2:6, 1:5] += 150
    Image.fromarray(a).save(os.path.join(root, f"im{i:02d}.jpg"), quality=95)


def _truth():
  m = np.zeros((8, 8), np.int32)
  m[2:6, 1:5] = 1
  return m


SETTINGS = ["--set", "train.max_steps=4", "--set", "models.unet.width=4",
            "--set", "models.unet.depth=1"]


def _cli(*argv):
  assert tool.run(["--quiet", *map(str, argv)]) == 0


def test_segmentation_project_round_trips_masks_and_refuses_bad_ones(tmp_path, capsys):
  pool = tmp_path / "imgs"
  _images(str(pool))
  proj = tmp_path / "proj"
  _cli("init", proj, "--pool", pool, "--classes", "background,box", "--task", "segmentation",
       "--image-size", "8x8", *SETTINGS, "--data-dir", tmp_path / "tfds")
  assert "<BrushLabels" in (proj / "label_config.xml").read_text()
  _cli("query", proj, "-k", "4")
  rows = list(csv.DictReader(open(proj / "queries" / "query_001.csv")))
  assert [r["answer"] for r in rows] == [f"query_001_answers/{r['id'][:-4]}.png" for r in rows]
  answers = proj / "queries" / "query_001_answers"
  truth = _truth()
  partial = truth.copy()
  partial[0] = -1  # a row nobody labeled
  written = {}
  for n, r in enumerate(rows):
    data = ma.mask_png(partial if n == 0 else truth)
    (proj / "queries" / r["answer"]).write_bytes(data)
    written[r["id"]] = data

  def log():
    with project_lib.open_project(str(proj), progress=False) as p:
      return p.events()

  before = log()
  bad_cases = [
      ("wrong size", np.zeros((8, 16), np.uint8), "is 8x16; the pool's images are 8x8"),
      ("bad class", np.full((8, 8), 7, np.uint8), "has values [7]; allowed: 0-1"),
  ]
  victim = proj / "queries" / rows[1]["answer"]
  for _, arr, message in bad_cases:
    Image.fromarray(arr, mode="L").save(victim)
    assert tool.run(["--quiet", "ingest", str(proj), str(answers)]) == 2
    err = capsys.readouterr().err
    assert message in err and rows[1]["id"][:-4] in err and err.count("\n") == 1
    assert log() == before
  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(victim)
  assert tool.run(["--quiet", "ingest", str(proj), str(answers)]) == 2
  assert "is a RGB image; masks are index images" in capsys.readouterr().err
  victim.write_bytes(written[rows[1]["id"]])
  stray = answers / "nobody.png"
  stray.write_bytes(written[rows[0]["id"]])
  assert tool.run(["--quiet", "ingest", str(proj), str(answers)]) == 2
  assert "no pool item has this name" in capsys.readouterr().err
  stray.unlink()
  assert log() == before
  _cli("ingest", proj, answers)
  _cli("ingest", proj, answers)  # twice: nothing new
  assert "\"unchanged\": 4" in capsys.readouterr().out.splitlines()[-1]

  # A model query: the model's masks as PNGs and brush pre-annotations; answers from Label
  # Studio (the pre-annotation accepted for two, a polygon for one).
  _cli("query", proj, "-k", "3")
  tasks = json.loads((proj / "queries" / "query_002_tasks.json").read_text())
  rows2 = list(csv.DictReader(open(proj / "queries" / "query_002.csv")))
  for task, row in zip(tasks, rows2):
    predicted = ma.read_answer_png(str(proj / "queries" / row["predicted_mask"]),
                                   ["background", "box"], (8, 8))
    got = ma.results_to_mask(task["predictions"][0]["result"], ["background", "box"], (8, 8))
    np.testing.assert_array_equal(predicted, got)
    assert row["score"]
  export = []
  for n, task in enumerate(tasks):
    result = task["predictions"][0]["result"] if n < 2 else [
        {"from_name": "label_polygon", "to_name": "image", "type": "polygonlabels",
         "value": {"points": [[12.5, 25], [62.5, 25], [62.5, 75], [12.5, 75]],
                   "polygonlabels": ["box"]}}]
    export.append({"id": 50 + n, "data": task["data"], "annotations": [{"result": result}]})
  (tmp_path / "ls.json").write_text(json.dumps(export))
  bad = json.loads(json.dumps(export))
  bad[1]["annotations"][0]["result"] = [{"from_name": "label", "type": "brushlabels",
                                         "value": {"rle": [1, 2, 3], "brushlabels": ["box"]}}]
  (tmp_path / "bad.json").write_text(json.dumps(bad))
  assert tool.run(["--quiet", "ingest", str(proj), str(tmp_path / "bad.json")]) == 2
  assert "bad.json, task 51: a brush 'rle' ends early" in capsys.readouterr().err
  assert len(log()) == 4
  _cli("ingest", proj, tmp_path / "ls.json")
  with project_lib.open_project(str(proj), progress=False) as p:
    labels = p.labels()
    assert len(labels) == 7
    np.testing.assert_array_equal(p._label_value(labels[tasks[2]["data"]["item_id"]]), truth)
    status = p.status(folds=2, plot=False)
  assert status["labeled"] == 7 and status["labeled_pixels"] == 7 * 64 - 8
  assert 0 <= status["cv_miou"] <= 1
  _cli("export", proj)
  out = proj / "export"
  for item_id, data in written.items():
    assert (out / "labels" / (item_id[:-4] + ".png")).read_bytes() == data
  assert len(os.listdir(out / "masks")) == 12
  model = project_lib.load_model(str(proj))
  masks, probs = model.predict([str(pool / "im00.jpg")])
  assert masks.shape == (1, 8, 8) and probs.shape == (1, 8, 8, 2)
  np.testing.assert_array_equal(
      masks[0], ma.read_answer_png(str(out / "masks" / "im00.png"), ["background", "box"], (8, 8)))


def test_segmentation_project_window_queries(tmp_path, capsys):
  """With region_size a model query asks for windows: the CSV names each, the model's mask and
  the Label Studio pre-annotation cover only them, an answer labeling pixels outside them is
  refused, and answers fill the windows of the masks so far (a window is never asked twice)."""
  pool = tmp_path / "imgs"
  _images(str(pool))
  proj = tmp_path / "proj"
  _cli("init", proj, "--pool", pool, "--classes", "background,box", "--task", "segmentation",
       "--image-size", "8x8", *SETTINGS, "--set", "region_size=4", "--set", "pool_subsample=0",
       "--data-dir", tmp_path / "tfds")
  truth = _truth()
  _cli("query", proj, "-k", "3")  # the cold start asks for whole images
  rows = list(csv.DictReader(open(proj / "queries" / "query_001.csv")))
  assert all(r["region"] == "" for r in rows)
  for r in rows:
    (proj / "queries" / r["answer"]).write_bytes(ma.mask_png(truth))
  _cli("ingest", proj, proj / "queries" / "query_001_answers")
  asked = {}
  for qnum in (2, 3):
    _cli("query", proj, "-k", "5")
    rows = list(csv.DictReader(open(proj / "queries" / f"query_{qnum:03d}.csv")))
    assert len(rows) == 5
    inside = {}
    for r in rows:
      top, left, bottom, right = map(int, r["region"].split(","))
      assert (bottom - top, right - left) == (4, 4)
      key = (r["id"], top, left)
      assert key not in asked
      asked[key] = qnum
      inside.setdefault(r["id"], np.zeros((8, 8), bool))[top:bottom, left:right] = True
    tasks = json.loads((proj / "queries" / f"query_{qnum:03d}_tasks.json").read_text())
    assert sorted(t["data"]["item_id"] for t in tasks) == sorted(inside)
    for item, box in inside.items():
      row = next(r for r in rows if r["id"] == item)
      predicted = ma.read_answer_png(str(proj / "queries" / row["predicted_mask"]),
                                     ["background", "box"], (8, 8))
      assert (predicted[~box] == -1).all() and (predicted[box] >= 0).all()
    answers = proj / "queries" / f"query_{qnum:03d}_answers"
    item, box = next(iter(inside.items()))
    (answers / (item[:-4] + ".png")).write_bytes(ma.mask_png(truth))  # labels everything
    assert tool.run(["--quiet", "ingest", str(proj), str(answers)]) == 2
    assert "labels pixels outside them; set those to 255" in capsys.readouterr().err
    for item, box in inside.items():
      (answers / (item[:-4] + ".png")).write_bytes(ma.mask_png(np.where(box, truth, -1)))
    with project_lib.open_project(str(proj), progress=False) as p:
      before = {i: p._label_value(v) for i, v in p.labels().items()}
    _cli("ingest", proj, answers)
    with project_lib.open_project(str(proj), progress=False) as p:
      after = {i: p._label_value(v) for i, v in p.labels().items()}
      assert p.meta["pending"] is None
    for item, box in inside.items():
      old = before.get(item, np.full((8, 8), -1))
      np.testing.assert_array_equal(after[item], np.where(box, truth, old))
