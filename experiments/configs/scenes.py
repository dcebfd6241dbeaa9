r"""Fashion-MNIST scenes (semantic segmentation), whole images queried, on a 2-core CPU.

  python -m experiments.compare --config=experiments/configs/scenes.py \
      --workdir=runs/scenes --strategies=random,entropy,entropy_top_q,bald

32x32 canvases holding 1-4 Fashion-MNIST items (``dal_jax.scenes``; 11 classes with the
background), a pool of 2,000 scenes, 200 validation and 500 test scenes. A small U-Net (width 8,
two levels, MC dropout in the decoder), 20 random initial images, k = 10 images per round up to
100, S = 10 MC-dropout samples over 500 random unlabeled candidates per round. Pixel scores are
reduced per image by the acquisition's ``reduction`` option (``mean`` by default; the
``entropy_top_q`` strategy of the comparison averages the 10% most uncertain pixels). Early
stopping on validation mIoU; the reports count labeled images.
"""

from dal_jax import config


def get_config():
  c = config.default_config()
  c.task = "segmentation"
  c.dataset = "scenes:size=32,train=2000,test=500"
  c.val_size = 200
  c.model = "unet"
  c.models.unet.width = 8
  c.models.unet.depth = 2
  c.initial_size = 20
  c.initial_balanced = False
  c.query_size = 10
  c.budget = 100
  c.mc_samples = 10
  c.pool_subsample = 500
  c.train.max_steps = 400
  c.train.min_steps = 150
  c.train.min_epochs = 0.0
  c.train.eval_every = 50
  c.train.patience = 2
  c.train.early_stopping = "miou"
  c.num_seeds = 3
  c.report_accuracy = 0.5
  c.workers = 2
  return c
