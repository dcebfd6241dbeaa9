r"""Fashion-MNIST scenes (semantic segmentation), whole images queried, on a 2-core CPU.

  python -m experiments.compare --config=experiments/configs/scenes.py \
      --acquisitions=random,entropy,entropy_top_q:entropy:methods.entropy.reduction=top_q_mean,bald \
      --workdir=runs/scenes

32x32 canvases holding 1-4 Fashion-MNIST items (``dal_jax.scenes``; 11 classes with the
background), a pool of 1,900 scenes, 100 validation and 300 test scenes. A small U-Net (width 16,
two levels, MC dropout in the decoder; learning rate 3e-3, at most 150 steps of 32 images, early
stopping on validation mIoU after 60), 20 random initial images, k = 10 images per round up to
50, S = 8 MC-dropout samples over 200 random unlabeled candidates per round. Pixel scores are
reduced per image by the acquisition's ``reduction`` option (``mean`` by default; the
``entropy_top_q`` strategy averages each image's 10% most uncertain pixels). The reports' curve
is the test mIoU against labeled images.
"""

from dal_jax import config


def get_config():
  c = config.default_config()
  c.task = "segmentation"
  c.dataset = "scenes:size=32,train=2000,test=300"
  c.val_size = 100
  c.model = "unet"
  c.models.unet.width = 16
  c.models.unet.depth = 2
  c.initial_size = 20
  c.initial_balanced = False
  c.query_size = 10
  c.budget = 50
  c.mc_samples = 8
  c.pool_subsample = 200
  c.train.learning_rate = 3e-3
  c.train.max_steps = 150
  c.train.min_steps = 60
  c.train.min_epochs = 0.0
  c.train.eval_every = 30
  c.train.patience = 2
  c.train.early_stopping = "miou"
  c.num_seeds = 3
  c.report_accuracy = 0.2
  c.workers = 2
  return c
