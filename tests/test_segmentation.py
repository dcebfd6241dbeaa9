"""Segmentation pieces (the task, the U-Net) checked on their own: the per-pixel loss and IoU
against float64 NumPy references and hand-computed cases, the U-Net's MC dropout, and a learner
that learns a toy segmentation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import log_softmax

from dal_jax import learner as learner_lib
from dal_jax import models
from dal_jax import tasks
from dal_jax import training
from dal_jax.tasks import segmentation as seg


def test_pixel_loss_ignores_unlabeled_pixels(rng):
  logits = rng.normal(size=(3, 4, 5, 6)) * 2
  labels = rng.integers(-1, 6, (3, 4, 5))
  labels[2] = -1  # an image with no labeled pixel costs nothing
  got = np.asarray(seg.pixel_loss(jnp.asarray(logits, jnp.float32), jnp.asarray(labels)))
  lp = log_softmax(logits, -1)
  want = []
  for i in range(3):
    v = labels[i] >= 0
    want.append(-lp[i][v, labels[i][v]].mean() if v.any() else 0.0)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_iou_known_case():
  # 2x3 image, 3 classes; label -1 ignored.
  labels = jnp.asarray([[[0, 0, 1], [1, 2, -1]]])
  pred = jnp.asarray([[[0, 1, 1], [1, 1, 0]]])
  scores = jax.nn.one_hot(pred, 3)
  # class 0: TP 1, FP 0 (the ignored pixel does not count), FN 1 -> 1/2
  # class 1: TP 2, FP 2, FN 0 -> 2/4; class 2: TP 0, FN 1 -> 0
  np.testing.assert_allclose(np.asarray(seg.iou_per_class(seg.confusion(scores, labels))),
                             [0.5, 0.5, 0.0])
  assert float(seg.mean_iou(scores, labels)) == pytest.approx(1 / 3)
  assert float(seg.pixel_accuracy(scores, labels)) == pytest.approx(3 / 5)
  # A class absent from labels and predictions does not count in the mean.
  scores4 = jax.nn.one_hot(pred, 4)
  m = tasks.SEGMENTATION.metrics(jnp.log(scores4 + 1e-9), labels)
  assert m["iou_per_class"][3] is None and m["miou"] == pytest.approx(1 / 3)


def test_iou_matches_a_reference_on_random_masks(rng):
  lp = log_softmax(rng.normal(size=(4, 8, 8, 5)), -1)
  labels = rng.integers(-1, 5, (4, 8, 8))
  pred = lp.argmax(-1)
  ious = []
  for c in range(5):
    v = labels >= 0
    tp = ((pred == c) & (labels == c)).sum()
    fp = ((pred == c) & (labels != c) & v).sum()
    fn = ((pred != c) & (labels == c)).sum()
    if tp + fp + fn:
      ious.append(tp / (tp + fp + fn))
  got = jax.jit(seg.mean_iou)(jnp.asarray(lp, jnp.float32), jnp.asarray(labels))
  assert float(got) == pytest.approx(np.mean(ious), rel=1e-5)
  valid = labels >= 0
  nll = -lp[valid, labels[valid]].mean()
  assert float(seg.pixel_nll(jnp.asarray(lp, jnp.float32), jnp.asarray(labels))) == (
      pytest.approx(nll, rel=1e-5))


def test_unet_outputs_and_mc_dropout():
  m = models.get_model("unet", (16, 16, 1), 4, width=4, depth=1)
  v = m.init(jax.random.key(0), jnp.zeros((1, 16, 16, 1)))
  x = jnp.asarray(np.random.default_rng(0).random((2, 16, 16, 1)), jnp.float32)
  logits, aux = m.apply(v, x, train=False)
  assert logits.shape == (2, 16, 16, 4) and aux["pre_logits"].shape == (2, 4)
  assert len(aux["features"]) == 2  # the bottleneck and one decoder level
  a = m.apply(v, x, train=False, mc=True, key=jax.random.key(1))[0]
  b = m.apply(v, x, train=False, mc=True, key=jax.random.key(1))[0]
  c = m.apply(v, x, train=False, mc=True, key=jax.random.key(2))[0]
  np.testing.assert_array_equal(a, b)
  assert float(jnp.abs(a - c).max()) > 0
  with pytest.raises(ValueError, match="multiples of 4"):
    models.get_model("unet", (18, 16, 1), 4, depth=2)
  with pytest.raises(ValueError, match=r"config.models.unet.depth=9 is not allowed"):
    models.get_model("unet", (16, 16, 1), 4, depth=9)


def test_a_learner_learns_a_toy_segmentation():
  """Bright pixels are class 1 or 2 (by the image's half), dark ones 0; half the labels hidden."""
  rng = np.random.default_rng(0)
  x = (rng.random((48, 8, 8, 1)) > 0.6).astype(np.float32)
  y = np.where(x[..., 0] > 0, 1, 0) + np.where((x[..., 0] > 0) & (np.arange(8) >= 4), 1, 0)
  labels = np.where(rng.random(y.shape) < 0.5, y, seg.IGNORE)
  model = models.get_model("unet", (8, 8, 1), 3, width=8, depth=1, dropout=0.1)
  learner = learner_lib.Learner(model=model, task=tasks.SEGMENTATION,
                                config=training.TrainConfig(max_steps=300, eval_every=50,
                                                            batch_size=16, learning_rate=3e-3,
                                                            early_stopping="miou", patience=4,
                                                            min_steps=0, min_epochs=0.0))
  fit = learner.fit(jnp.asarray(x[:40]), jnp.asarray(labels[:40]), jnp.ones(40, bool),
                    keys=jax.random.split(jax.random.key(0), 2),
                    val=(jnp.asarray(x[40:]), jnp.asarray(y[40:])))
  lp = learner.predict(fit.variables, jnp.asarray(x[40:])).log_probs  # [M, 1, n, H, W, C]
  m = tasks.SEGMENTATION.metrics(lp[0, 0], y[40:])
  assert m["miou"] > 0.9 and m["accuracy"] > 0.95, m
  assert fit.best_val_accuracy.shape == (2,) and (fit.best_val_accuracy > 0.9).all()
  with pytest.raises(ValueError, match=r"labels must be shaped \[N, 8, 8\] or \[M, N, 8, 8\] "
                     r"for the segmentation task"):
    learner.fit(jnp.asarray(x), jnp.zeros(48, jnp.int32), jnp.ones(48, bool),
                keys=jax.random.split(jax.random.key(0), 2))


def _scenes_config(data_dir, **overrides):
  from experiments.configs import scenes as scenes_config
  c = scenes_config.get_config()
  c.dataset = "scenes:size=16,train=48,test=16"
  c.data_dir = str(data_dir)
  c.val_size = 8
  c.models.unet.width = 4
  c.models.unet.depth = 1
  c.initial_size = 6
  c.query_size = 3
  c.budget = 9
  c.mc_samples = 3
  c.pool_subsample = 20
  c.train.max_steps = 6
  c.train.min_steps = 0
  c.train.eval_every = 3
  c.train.batch_size = 4
  c.num_seeds = 1
  c.workers = 1
  c.progress = False
  for k, v in overrides.items():
    c[k] = v
  return c


def test_the_loop_runs_segmentation_on_scenes_and_resumes(tmp_path):
  """The experiment entry point on Fashion-MNIST scenes: masks are the labels (the oracle's
  answers are the scenes' masks), images are queried whole by reduced pixel scores, mIoU is
  reported, and a run killed after a round resumes to the same selections."""
  from dal_jax import data
  from dal_jax import experiment
  from dal_jax import loop

  config = _scenes_config(tmp_path / "data", acquisition="entropy")
  config.methods.entropy.reduction = "top_q_mean"
  splits = experiment.load_splits(config)
  assert splits.pool.y.shape == (40, 16, 16) and splits.pool.num_classes == 11
  full = experiment.run_experiment(config, str(tmp_path / "full"), splits=splits)[0]
  assert [r["num_labels"] for r in full] == [6, 9]
  assert full[-1]["stop"] == "budget"
  selected = [i for r in full for i in r["selected"]]
  assert len(selected) == len(set(selected)) == 3
  for r in full:
    assert 0 <= r["miou"] <= 1 and len(r["iou_per_class"]) == 11 and 0 <= r["accuracy"] <= 1
  # The state's labels are the masks of the labeled scenes; the others are unknown.
  ckpt_state = experiment.SeedRun(experiment.build(config, splits), 0,
                                  str(tmp_path / "full" / "seed_0")).state
  labeled = np.asarray(ckpt_state.labeled)
  assert labeled.sum() == 9 and set(np.nonzero(labeled)[0]) >= set(selected)
  np.testing.assert_array_equal(np.asarray(ckpt_state.labels)[labeled], splits.pool.y[labeled])
  assert (np.asarray(ckpt_state.labels)[~labeled] == loop.UNKNOWN).all()
  # Killed after one round (max_rounds), resumed: the same run.
  experiment.run_experiment(config, str(tmp_path / "resumed"), splits=splits, max_rounds=1)
  again = experiment.run_experiment(config, str(tmp_path / "resumed"), splits=splits)[0]
  assert [r["selected"] for r in again] == [r["selected"] for r in full]
  np.testing.assert_allclose([r["miou"] for r in again], [r["miou"] for r in full], rtol=1e-6)
  # What does not apply to masks is refused in one line.
  with pytest.raises(ValueError, match="class-balanced initial set needs one class per item"):
    experiment.run_experiment(_scenes_config(tmp_path / "data", initial_balanced=True),
                              str(tmp_path / "bal"), splits=splits)
  with pytest.raises(ValueError, match="imbalance_ratio and ood_fraction need one class per"):
    data.make_splits(splits.pool, splits.test, seed=0, val_size=4, imbalance_ratio=2.0)
  with pytest.raises(ValueError, match=r"dataset 'scenes:size=8': size='8' must be an integer "
                     r">= 16"):
    data.scene_options("scenes:size=8")


def _mask_folder(root, n=12, size=(16, 16), *, test=4, seed=0):
  """Images with PNG masks beside them (class 2 where bright on the right half, 1 on the left,
  0 dark); pixel (0, 0) of each mask is 255 (not labeled)."""
  from PIL import Image
  rng = np.random.default_rng(seed)
  for split, count in (("", n), ("test", test)):
    base = root / split if split else root
    (base / "images").mkdir(parents=True)
    (base / "masks").mkdir(parents=True)
    for i in range(count):
      img = (rng.random(size) > 0.5).astype(np.uint8) * 200
      mask = np.where(img > 0, 1 + (np.arange(size[1]) >= size[1] // 2), 0).astype(np.uint8)
      mask[0, 0] = 255
      Image.fromarray(img).save(base / "images" / f"im{i:02d}.png")
      Image.fromarray(mask).save(base / "masks" / f"im{i:02d}.png")
  return root


def test_a_folder_of_images_with_png_masks_is_a_segmentation_dataset(tmp_path):
  from PIL import Image

  from dal_jax import data
  from dal_jax import experiment
  root = _mask_folder(tmp_path / "own")
  train, test = data.load_dataset(f"masks:{root}")
  assert train.x.shape == (12, 16, 16, 1) and train.y.shape == (12, 16, 16)
  assert test.x.shape == (4, 16, 16, 1) and train.num_classes == 3
  want = np.asarray(Image.open(root / "masks" / "im03.png"), np.int32)
  np.testing.assert_array_equal(train.y[3], np.where(want == 255, -1, want))
  np.testing.assert_allclose(train.x[3, ..., 0],
                             np.asarray(Image.open(root / "images" / "im03.png")) / 255.0)
  # The loop runs on it (the segmentation config, whole images queried).
  config = _scenes_config(tmp_path / "data", dataset=f"masks:{root}", val_size=2,
                          initial_size=4, budget=7, pool_subsample=0, acquisition="bald")
  records = experiment.run_experiment(config, str(tmp_path / "run"))[0]
  assert [r["num_labels"] for r in records] == [4, 7] and 0 <= records[-1]["miou"] <= 1
  # A bad folder is refused in one line naming the file.
  (root / "masks" / "im05.png").unlink()
  with pytest.raises(ValueError, match=r"image '.*im05.png' has no mask .*im05.png"):
    data.load_dataset(f"masks:{root}")
  Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(root / "masks" / "im05.png")
  with pytest.raises(ValueError, match=r"mask '.*im05.png' is a RGB image; masks are index "
                     r"images"):
    data.load_dataset(f"masks:{root}")
  Image.fromarray(np.full((16, 16), 7, np.uint8)).save(root / "masks" / "im05.png")
  (root / "classes.txt").write_text("background\nleft\nright\n")
  with pytest.raises(ValueError, match=r"mask '.*im05.png' has class 7; the classes are 0..2 "
                     r"\(classes.txt\)"):
    data.load_dataset(f"masks:{root}")
  Image.fromarray(np.zeros((8, 16), np.uint8)).save(root / "images" / "im06.png")
  Image.fromarray(np.zeros((16, 16), np.uint8)).save(root / "masks" / "im05.png")
  with pytest.raises(ValueError, match=r"image '.*im06.png' is 16x8; every image of the folder "
                     r"must be 16x16"):
    data.load_dataset(f"masks:{root}")
