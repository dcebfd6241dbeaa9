"""Object detection (``dal_jax.tasks.detection``): the loss against a float64 NumPy reference,
box decoding and IoU on hand-computed cases, COCO mAP on fixtures with ties and empty images,
the detection acquisitions against references and invariants, and a tiny end-to-end run."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import log_softmax

from dal_jax import acquisition as acq
from dal_jax import config as config_lib
from dal_jax import learner as learner_lib
from dal_jax import models
from dal_jax import tasks
from dal_jax import training
from dal_jax.tasks import detection as det



def _reference_loss(outputs, labels):
  """float64 NumPy reference of one image's loss, written box by box."""
  h, w, k = outputs.shape
  logits, reg = outputs[..., :k - 4], outputs[..., k - 4:]
  lp = log_softmax(logits.astype(np.float64), axis=-1)
  heat = np.zeros((h, w))
  positive = np.zeros((h, w), bool)
  obj, box, count = 0.0, 0.0, 0
  for c, top, left, bottom, right in labels:
    if c < 0:
      continue
    count += 1
    cy, cx = (top + bottom) / 2 / 4, (left + right) / 2 / 4
    iy, ix = min(int(np.floor(cy)), h - 1), min(int(np.floor(cx)), w - 1)
    bh, bw = max((bottom - top) / 4, 0.25), max((right - left) / 4, 0.25)
    sy, sx = max(bh / 6, 0.25), max(bw / 6, 0.25)
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    heat = np.maximum(heat, np.exp(-((yy - iy) ** 2 / (2 * sy ** 2)
                                     + (xx - ix) ** 2 / (2 * sx ** 2))))
    positive[iy, ix] = True
    p = np.exp(lp[iy, ix, c + 1])
    obj += (1 - p) ** 2 * -lp[iy, ix, c + 1]
    target = np.array([cy - iy, cx - ix, np.log(bh), np.log(bw)])
    box += np.abs(reg[iy, ix] - target).sum()
  p_bg = np.exp(lp[..., 0])
  bg = np.where(positive, 0.0, (1 - heat) ** 4 * (1 - p_bg) ** 2 * -lp[..., 0]).sum()
  return (obj + bg + box) / max(count, 1)


def _random_labels(rng, n, b, size, classes):
  labels = np.full((n, b, 5), -1)
  for i in range(n):
    for j in range(rng.integers(0, b + 1)):
      top, left = rng.integers(0, size - 4, 2)
      bottom = rng.integers(top + 1, size + 1)
      right = rng.integers(left + 1, size + 1)
      labels[i, j] = (rng.integers(classes), top, left, bottom, right)
  return det.pad_boxes(labels)


def test_loss_matches_a_float64_reference_on_random_inputs():
  rng = np.random.default_rng(0)
  for trial in range(3):
    outputs = rng.normal(size=(5, 8, 8, 3 + 1 + 4)).astype(np.float32)
    labels = _random_labels(rng, 5, 4, 32, 3)
    got = np.asarray(det.loss(jnp.asarray(outputs), jnp.asarray(labels)))
    want = [_reference_loss(outputs[i], labels[i]) for i in range(5)]
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-5)


def test_an_image_without_boxes_trains_as_background_only():
  outputs = np.zeros((1, 4, 4, 2 + 1 + 4), np.float32)
  labels = det.pad_boxes(np.full((1, 3, 5), -1))
  # every cell: (1 - p_bg)^2 · -log p_bg with p_bg = 1/3, 16 cells, one "object" in the norm
  want = 16 * (2 / 3) ** 2 * np.log(3)
  assert float(det.loss(jnp.asarray(outputs), jnp.asarray(labels))[0]) == pytest.approx(want,
                                                                                        rel=1e-5)
  assert bool(np.all(np.asarray(labels) >= -1)) and (np.asarray(labels)[..., 1:] == 0).all()


def test_decode_places_the_box_of_a_peak_and_suppresses_its_neighbours():
  h = w = 8
  logits = np.full((1, h, w, 3), -5.0, np.float32)
  logits[..., 0] = 5.0  # background everywhere ...
  logits[0, 2, 5] = (0.0, 0.0, 6.0)  # ... but class 1 at cell (2, 5)
  logits[0, 2, 6] = (0.0, 0.0, 5.0)  # a weaker neighbour: not a peak
  reg = np.zeros((1, h, w, 4), np.float32)
  reg[0, 2, 5] = (0.25, 0.75, np.log(3.0), np.log(2.0))
  d = det.decode(jax.nn.log_softmax(jnp.asarray(logits)), jnp.asarray(reg), max_detections=3)
  assert int(d.classes[0, 0]) == 1
  p = np.exp(log_softmax(logits[0, 2, 5].astype(np.float64)))[2]
  assert float(d.scores[0, 0]) == pytest.approx(p, rel=1e-5)
  cy, cx, bh, bw = (2 + 0.25) * 4, (5 + 0.75) * 4, 3 * 4, 2 * 4
  np.testing.assert_allclose(np.asarray(d.boxes[0, 0]),
                             [cy - bh / 2, cx - bw / 2, cy + bh / 2, cx + bw / 2], rtol=1e-5)
  peaks_at_2_6 = [(int(c), tuple(np.asarray(b).round(2))) for s, c, b in
                  zip(d.scores[0], d.classes[0], d.boxes[0]) if s > 0.5]
  assert len(peaks_at_2_6) == 1  # the neighbour (p ~ 0.7) is no peak


def test_box_iou_hand_computed_cases():
  a = jnp.array([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 0.0, 0.0]])
  b = jnp.array([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0], [5.0, 5.0, 6.0, 6.0]])
  np.testing.assert_allclose(np.asarray(det.box_iou(a, b)),
                             [[1 / 7, 1.0, 0.0], [0.0, 0.0, 0.0]], rtol=1e-6)


def _dets(rows, k=4):
  """Detections from per-image lists of (score, class, top, left, bottom, right)."""
  scores = np.zeros((len(rows), k), np.float32)
  classes = np.zeros((len(rows), k), np.int32)
  boxes = np.zeros((len(rows), k, 4), np.float32)
  for i, image in enumerate(rows):
    for j, (s, c, *b) in enumerate(image):
      scores[i, j], classes[i, j], boxes[i, j] = s, c, b
  return det.Detections(scores, classes, boxes)


def test_coco_map_known_answers_with_ties_and_empty_images():
  labels = det.pad_boxes(np.array([
      [[0, 0, 0, 10, 10], [0, 20, 20, 30, 30], [-1] * 5],
      [[-1] * 5] * 3,  # an empty image, no detections
      [[-1] * 5] * 3,  # an empty image with a low-scored false positive
  ]))
  perfect = _dets([[(0.9, 0, 0, 0, 10, 10), (0.8, 0, 20, 20, 30, 30)], [], []])
  assert det.coco_map(perfect, labels, 2) == pytest.approx({"map": 1.0, "map50": 1.0,
                                                            "map75": 1.0})
  # TP (0.9), FP (0.8, tied with the next TP, listed first), TP (0.8), FP on image 3 (0.6):
  # precision 1, 1/2, 2/3, 2/4 at recall 1/2, 1/2, 1, 1. COCO's 101-point interpolated AP:
  # recall <= 0.5 -> 1 (51 points), recall in (0.5, 1] -> 2/3 (50 points).
  mixed = _dets([[(0.9, 0, 0, 0, 10, 10), (0.8, 0, 40, 40, 50, 50), (0.8, 0, 20, 20, 30, 30)],
                 [], [(0.6, 0, 1, 1, 5, 5)]])
  ap = (51 + 50 * 2 / 3) / 101
  got = det.coco_map(mixed, labels, 2)
  assert got["map50"] == pytest.approx(ap, abs=1e-6)
  assert got["map"] == pytest.approx(ap, abs=1e-6)  # exact boxes: every IoU threshold alike
  # A box of IoU 0.6 with its object counts at IoU 0.5 and 0.55 only (2 of 10 thresholds).
  shifted = _dets([[(0.9, 0, 0, 0, 10, 10), (0.8, 0, 20, 20, 30, 35)], [], []])
  iou = 100 / 150
  assert iou == pytest.approx(float(det.box_iou(jnp.array([[20., 20, 30, 30]]),
                                                jnp.array([[20., 20, 30, 35]]))[0, 0]))
  got = det.coco_map(shifted, labels, 2)
  assert got["map50"] == pytest.approx(1.0)
  half = (51 + 0) / 101  # one of two objects found at the stricter thresholds
  n_loose = sum(t <= iou + 1e-9 for t in np.linspace(0.5, 0.95, 10))
  assert got["map"] == pytest.approx((n_loose * 1.0 + (10 - n_loose) * half) / 10, abs=1e-6)
  assert np.isnan(det.coco_map(perfect, labels[1:], 2)["map"])  # no ground truth at all
  assert det.coco_map(_dets([[], [], []]), labels, 2)["map50"] == 0.0


def test_boxes_are_checked_one_line_per_bad_row():
  good = det.pad_boxes(np.array([[[1, 0, 0, 4, 4], [-1] * 5]]))
  det.check_boxes(good, (8, 8), 3)
  for row, message in [((3, 0, 0, 4, 4), "class 3"), ((1, 0, 0, 9, 4), "inside the 8x8"),
                       ((1, 4, 4, 4, 6), "positive size")]:
    bad = good.copy()
    bad[0, 1] = row
    with pytest.raises(ValueError, match=f"item 0, box 1: .*{message}"):
      det.check_boxes(bad, (8, 8), 3)


def test_detector_outputs_and_mc_dropout():
  model = models.get_model("centernet", (32, 32, 1), 5, width=4)
  v = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 1)))
  x = jax.random.uniform(jax.random.key(1), (3, 32, 32, 1))
  out, aux = model.apply(v, x, train=False)
  assert out.shape == (3, 8, 8, 5 + 5) and aux["pre_logits"].shape == (3, 16)
  np.testing.assert_array_equal(aux["box_regression"], out[..., -4:])
  a = model.apply(v, x, train=False, mc=True, key=jax.random.key(2))[0]
  b = model.apply(v, x, train=False, mc=True, key=jax.random.key(3))[0]
  assert not np.allclose(a, b)
  with pytest.raises(ValueError, match="multiples of 4"):
    models.get_model("centernet", (30, 32, 1), 5)


def test_learner_refuses_masks_for_the_detection_task():
  model = models.get_model("centernet", (16, 16, 1), 3, width=2)
  learner = learner_lib.Learner(model=model, task=tasks.DETECTION,
                                config=training.TrainConfig(early_stopping="loss"))
  x = np.zeros((4, 16, 16, 1), np.float32)
  with pytest.raises(ValueError, match=r"labels must be shaped \[N, B, 5\]"):
    learner.fit(x, np.zeros((4, 16, 16), np.int32), np.ones(4, bool),
                keys=jax.random.split(jax.random.key(0), 1))


def _objectness_reference(log_probs):
  p = np.exp(log_probs.astype(np.float64)).mean(axis=0)
  o = 1 - p[..., 0]
  q = p[..., 1:] / p[..., 1:].sum(-1, keepdims=True)
  return o, q


def test_box_entropy_and_margin_match_float64_references():
  rng = np.random.default_rng(3)
  lp = log_softmax(rng.normal(size=(4, 6, 5, 5, 4)) * 2, axis=-1).astype(np.float32)
  o, q = _objectness_reference(lp)
  want_h = o * -(q * np.log(q)).sum(-1)
  top = np.sort(q, axis=-1)
  want_m = o * (1 - (top[..., -1] - top[..., -2]))
  np.testing.assert_allclose(np.asarray(acq.box_entropy(jnp.asarray(lp))), want_h, rtol=1e-4)
  np.testing.assert_allclose(np.asarray(acq.box_margin(jnp.asarray(lp))), want_m, rtol=1e-4,
                             atol=1e-6)
  # Per image: the registered score reduces the cells (max here) and masks labeled images.
  a = acq.get_acquisition("box_entropy", reduction="max")
  where = np.array([True, True, False, True, True, True])
  picked, _ = a.select({}, {"log_probs": jnp.asarray(lp)}, key=jax.random.key(0), k=2,
                       where=jnp.asarray(where))
  order = np.argsort(-np.where(where, want_h.reshape(6, -1).max(1), -np.inf))
  assert sorted(np.asarray(picked).tolist()) == sorted(order[:2].tolist())


class _CellModel:
  """A flip-equivariant stand-in detector: class logits from each 4x4 cell's mean intensity,
  boxes 8x8 centred on their cell."""

  @staticmethod
  def apply(variables, x, *, train=False, **kw):
    n, h, w, _ = x.shape
    cells = x.reshape(n, h // 4, 4, w // 4, 4).mean(axis=(2, 4))
    logits = jnp.stack([2 - 6 * cells, 4 * cells, 6 * cells - 1], axis=-1)
    reg = jnp.broadcast_to(jnp.array([0.5, 0.5, np.log(2.0), np.log(2.0)]),
                           (*cells.shape, 4))
    out = jnp.concatenate([logits, reg], axis=-1)
    return out, {"pre_logits": cells.reshape(n, -1)}


def test_model_scores_are_zero_for_a_stable_and_flip_equivariant_detector():
  x = jax.random.uniform(jax.random.key(0), (5, 16, 16, 1))
  flip = acq.flip_consistency(_CellModel, None, x)
  np.testing.assert_allclose(np.asarray(flip), 0.0, atol=1e-5)
  still = acq.localization_stability(_CellModel, None, x, key=jax.random.key(1), noise_step=0.0)
  np.testing.assert_allclose(np.asarray(still), 0.0, atol=1e-5)
  noisy = acq.localization_stability(_CellModel, None, x, key=jax.random.key(1),
                                     noise_step=0.3)
  assert noisy.shape == (5,) and float(jnp.max(noisy)) > 0.01
  again = acq.localization_stability(_CellModel, None, x, key=jax.random.key(1),
                                     noise_step=0.3)
  np.testing.assert_array_equal(noisy, again)  # same key, same scores
  # A detector that is not mirror-symmetric is inconsistent under the flip.
  skew = type("Skew", (), {"apply": staticmethod(
      lambda v, x, **kw: _CellModel.apply(v, x * jnp.linspace(0, 2, x.shape[2])[None, None, :,
                                                                               None]))})
  assert float(jnp.max(acq.flip_consistency(skew, None, x))) > 0.01


def test_detection_acquisitions_are_refused_for_other_tasks_in_one_line():
  c = config_lib.default_config()
  c.acquisition = "box_entropy"
  with pytest.raises(ValueError, match="applies to the detection task only.*'classification'"):
    config_lib.check(c)


def test_scenes_give_padded_boxes(tmp_path):
  from dal_jax import data
  with pytest.raises(ValueError, match="labels='points' must be one of"):
    data.scene_options("scenes:labels=points")
  assert data.scene_options("scenes:labels=boxes")["labels"] == "boxes"


@pytest.mark.parametrize("task", ["segmentation", "detection"])
def test_whole_item_acquisitions_are_refused_for_dense_tasks_before_any_work(task):
  for name in ("badge", "batchbald", "epig", "egl", "kdpp"):
    c = config_lib.default_config()
    c.task, c.acquisition = task, name
    c.train.early_stopping = "loss" if task == "detection" else "miou"
    with pytest.raises(ValueError, match=f"'{name}' applies to the classification task only "
                       "\\(it reads one class distribution per item\\)"):
      config_lib.check(c)
  c = config_lib.default_config()
  c.task, c.acquisition = task, "coreset"  # pooled features: any task
  if task == "detection":
    c.train.early_stopping = "loss"
  else:
    c.train.early_stopping = "miou"
  config_lib.check(c)


def _detection_config(data_dir, **overrides):
  """The segmentation tests' tiny scenes recipe with boxes and a detector."""
  from tests.test_segmentation import _scenes_config
  c = _scenes_config(data_dir, task="detection", model="centernet",
                     dataset="scenes:size=32,train=48,test=16,labels=boxes")
  c.models.centernet.width = 2
  c.train.early_stopping = "loss"
  for k, v in overrides.items():
    c[k] = v
  return c


@pytest.mark.skipif(not os.path.isdir("/usr/share/datasets/fashion-mnist"),
                    reason="needs Debian's dataset-fashion-mnist")
def test_detection_runs_ensembles_and_parallel_seeds_and_resumes(tmp_path, capsys):
  """Boxes are the oracle's answers; an ensemble of two detectors per seed, two seeds stacked
  in one program, BALD per cell reduced by the max; a run killed after a round resumes to the
  same selections."""
  from dal_jax import experiment
  from dal_jax import loop

  config = _detection_config(tmp_path / "data", acquisition="bald", ensemble_size=2,
                             num_seeds=2, parallel_seeds=True, mc_samples=0, progress=True)
  config.methods.bald.reduction = "max"
  splits = experiment.load_splits(config)
  assert splits.pool.y.shape == (40, 4, 5) and splits.pool.num_classes == 10
  full = experiment.run_experiment(config, str(tmp_path / "full"), splits=splits)
  assert sorted(full) == [0, 1]
  assert "[bald seed 1] round   1  labels     9  map50 " in capsys.readouterr().out
  for rows in full.values():
    assert [r["num_labels"] for r in rows] == [6, 9]
    assert len(set(rows[0]["selected"])) == 3 and all(0 <= r["map50"] <= 1 for r in rows)
    assert rows[0]["ensemble_size"] == 2 and sum(rows[0]["selected_class_histogram"]) > 0
  state = experiment.SeedRun(experiment.build(config, splits), 0,
                             str(tmp_path / "full" / "seed_0")).state
  labeled = np.asarray(state.labeled)
  np.testing.assert_array_equal(np.asarray(state.labels)[labeled], splits.pool.y[labeled])
  assert (np.asarray(state.labels)[~labeled] == loop.UNKNOWN).all()
  experiment.run_experiment(config, str(tmp_path / "resumed"), splits=splits, max_rounds=1)
  again = experiment.run_experiment(config, str(tmp_path / "resumed"), splits=splits)
  assert {s: [r["selected"] for r in rows] for s, rows in again.items()} == {
      s: [r["selected"] for r in rows] for s, rows in full.items()}
  with pytest.raises(ValueError, match="has no such labels"):
    experiment.run_experiment(_detection_config(tmp_path / "data", region_size=8),
                              str(tmp_path / "regions"), splits=splits)


def test_coco_folder_dataset_scales_boxes_and_refuses_unlisted_images(tmp_path):
  from PIL import Image

  from dal_jax import box_answers
  from dal_jax import data

  root = tmp_path / "own"
  (root / "images").mkdir(parents=True)
  for i in range(3):
    Image.fromarray(np.full((16, 16), 40 * i, np.uint8)).save(root / "images" / f"a{i}.png")
  coco = box_answers.coco_file([("a0.png", [[1, 0, 0, 8, 16]], None), ("a1.png", [], None),
                                ("a2.png", [[0, 2, 2, 4, 6], [1, 8, 8, 16, 16]], None)],
                               ["cat", "dog"], (32, 32))  # annotated at twice the size
  (root / "annotations.json").write_text(json.dumps(coco))
  train, test = data.load_dataset(f"coco:{root}")
  assert train.x.shape == (3, 16, 16, 1) and len(test) == 0 and train.num_classes == 2
  np.testing.assert_array_equal(train.y, [
      [[1, 0, 0, 4, 8], [-1, 0, 0, 0, 0]],
      [[-1, 0, 0, 0, 0], [-1, 0, 0, 0, 0]],
      [[0, 1, 1, 2, 3], [1, 4, 4, 8, 8]]])
  Image.fromarray(np.zeros((16, 16), np.uint8)).save(root / "images" / "extra.png")
  with pytest.raises(ValueError, match="extra.png' is not listed"):
    data.load_dataset(f"coco:{root}")
  os.remove(root / "images" / "extra.png")
  coco["annotations"][0]["bbox"] = [20, 0, 16, 4]
  (root / "annotations.json").write_text(json.dumps(coco))
  with pytest.raises(ValueError, match="image 'a0.png', annotation 1: the box .* leaves the "
                     "32x32 image"):
    data.load_dataset(f"coco:{root}")


def test_detection_model_scores_refuse_a_classifier_in_one_line():
  model = models.get_model("mlp", (4, 4, 1), 3, hidden=(8,))
  x = jnp.zeros((5, 4, 4, 1))
  for fn in (acq.flip_consistency, acq.localization_stability):
    with pytest.raises(ValueError, match=r"reads a detector's outputs \[N, h, w, C \+ 5\].*"
                       r"gives \(5, 3\)"):
      fn(model, model.init(jax.random.key(0), None), x, key=jax.random.key(0))
