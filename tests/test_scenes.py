"""Fashion-MNIST scenes (``dal_jax.scenes``): deterministic, masks and boxes consistent with the
pixels, prepared once through the tfds builder and read back unchanged."""

import numpy as np
import pytest

from dal_jax import _idx_builder
from dal_jax import data
from dal_jax import scenes


def test_scenes_are_deterministic_and_masks_and_boxes_agree_with_the_pixels():
  rng = np.random.default_rng(0)
  items = (rng.random((20, 28, 28)) > 0.5).astype(np.uint8) * 200
  labels = rng.integers(0, 10, 20)
  a = scenes.compose_scenes(items, labels, 30, seed=1, size=48)
  b = scenes.compose_scenes(items, labels, 30, seed=1, size=48)
  c = scenes.compose_scenes(items, labels, 30, seed=2, size=48)
  assert all(np.array_equal(u, v) for u, v in zip(a, b))
  assert not np.array_equal(a.x, c.x)
  assert a.x.shape == (30, 48, 48, 1) and a.masks.shape == (30, 48, 48)
  assert a.boxes.shape == (30, scenes.MAX_ITEMS, 5)
  # Every labeled pixel is bright; every class is a source class + 1; every scene has an item.
  assert (a.x[..., 0][a.masks > 0] > 0.25 * 255).all()
  assert set(np.unique(a.masks)) <= {0, *(labels + 1).tolist()}
  present = a.boxes[..., 0] >= 0
  assert present.any(axis=1).all()
  for i in range(30):
    for cls, top, left, bottom, right in a.boxes[i][present[i]]:
      assert 0 <= top < bottom <= 48 and 0 <= left < right <= 48 and cls in labels
    # Pixels of a class lie inside the union of that class's boxes.
    for cls in np.unique(a.masks[i])[1:]:
      inside = np.zeros((48, 48), bool)
      for _, t, l, bo, r in a.boxes[i][a.boxes[i][:, 0] == cls - 1]:
        inside[t:bo, l:r] = True
      assert inside[a.masks[i] == cls].all()
  with pytest.raises(ValueError, match="scene items must be uint8"):
    scenes.compose_scenes(items.astype(np.float32), labels, 3, seed=0)


def test_scenes_from_fashion_mnist_are_prepared_once_and_read_back(tmp_path):
  source = data.FASHION_MNIST_DIR
  train, test = scenes.load_scenes(source, str(tmp_path), train=40, test=10, size=64, seed=3)
  assert train.x.shape == (40, 64, 64, 1) and test.masks.shape == (10, 64, 64)
  assert train.masks.max() <= 10 and (train.masks > 0).mean() > 0.05
  images, labels = _idx_builder.read_idx_split(source, "train")
  want = scenes.compose_scenes(images, labels, 40, seed=3, size=64)
  assert all(np.array_equal(u, v) for u, v in zip(train, want))
  again, _ = scenes.load_scenes(source, str(tmp_path), train=40, test=10, size=64, seed=3)
  assert np.array_equal(again.masks, train.masks)
