r"""Fashion-MNIST scenes (object detection) on a 2-core CPU.

  python -m experiments.compare --config=experiments/configs/scenes_detection.py \
      --acquisitions=random,entropy_max:box_entropy:methods.box_entropy.reduction=max,entropy_mean:box_entropy,bald_max:bald:methods.bald.reduction=max,localization_stability,flip_consistency,coreset \
      --workdir=runs/scenes_detection

64x64 canvases holding 1-4 Fashion-MNIST items (``dal_jax.scenes`` with ``labels=boxes``: each
item's box and class, 10 classes), a pool of 1,950 scenes, 50 validation and 200 test scenes.
A small CenterNet-style detector (``centernet``, width 8: stride 4, a softmax over background
and the classes per cell, MC dropout in the head), 20 random initial images, k = 15 images per
round up to 65, S = 8 MC-dropout samples over 200 random unlabeled candidates per round. The
curve is the test COCO mAP@0.5 against labeled images.
"""

from dal_jax import config
from experiments.configs import scenes


def get_config():
  """The segmentation scenes' recipe (pool, budget, rounds, training) with boxes and a
  detector."""
  c = scenes.get_config()
  c.task = "detection"
  c.dataset = "scenes:size=64,train=2000,test=200,labels=boxes"
  c.model = "centernet"
  c.models.centernet.width = 8
  c.budget = 65
  c.train.early_stopping = "loss"
  c.models.unet = config.default_config().models.unet  # (not used: the U-Net's defaults)
  return c
