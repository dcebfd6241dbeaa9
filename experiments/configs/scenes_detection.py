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


def get_config():
  c = config.default_config()
  c.task = "detection"
  c.dataset = "scenes:size=64,train=2000,test=200,labels=boxes"
  c.val_size = 50
  c.model = "centernet"
  c.models.centernet.width = 8
  c.initial_size = 20
  c.initial_balanced = False
  c.query_size = 15
  c.budget = 65
  c.mc_samples = 8
  c.pool_subsample = 200
  c.train.learning_rate = 3e-3
  c.train.max_steps = 300
  c.train.min_steps = 200
  c.train.min_epochs = 0.0
  c.train.eval_every = 50
  c.train.patience = 2
  c.train.early_stopping = "loss"
  c.num_seeds = 3
  c.report_accuracy = 0.2
  c.workers = 2
  return c
