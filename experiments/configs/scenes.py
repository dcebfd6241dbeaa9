r"""Fashion-MNIST scenes (semantic segmentation) on a 2-core CPU: images or windows queried.

  python -m experiments.compare --config=experiments/configs/scenes.py \
      --acquisitions=random,foreground_random,entropy,entropy_top_q:entropy:methods.entropy.reduction=top_q_mean,bald,random_windows:random:region_size=8:query_size=240,ripu_windows:ripu:region_size=8:query_size=240 \
      --workdir=runs/scenes

32x32 canvases holding 1-4 Fashion-MNIST items (``dal_jax.scenes``; 11 classes with the
background), a pool of 1,950 scenes, 50 validation and 200 test scenes. A small U-Net (width 8,
two levels, MC dropout in the decoder; learning rate 3e-3, at most 300 steps of 32 images, early
stopping on validation mIoU after 200), 20 random initial images, k = 15 images per round up to
50, S = 8 MC-dropout samples over 200 random unlabeled candidates per round. Pixel scores are
reduced per image by the acquisition's ``reduction`` option (``mean`` by default;
``entropy_top_q`` averages each image's 10% most uncertain pixels). ``foreground_random`` takes
random images with predicted foreground first. ``random_windows`` and ``ripu_windows`` query
8x8 windows (240 per round: 15 images' worth of pixels), at random or by RIPU's impurity x
entropy. The reports' curve is the test mIoU against labeled pixels in images' worth.

The recipe is sized to run the seven strategies with 3 seeds in about 15 minutes on 2 cores
(width 8 trains 3.3 times faster per step than width 16). At 20-50 labeled scenes the U-Net is
far from converged: trained on the first 50 pool scenes it reaches a test mIoU of 0.14 (width 8,
300 steps), 0.16 (width 8, 600 steps), 0.18 (width 16, 300 steps), 0.21 (width 16, 1,000
steps), so the comparison measures the strategies in that low-budget regime only.
"""

from dal_jax import config


def get_config():
  c = config.default_config()
  c.task = "segmentation"
  c.dataset = "scenes:size=32,train=2000,test=200"
  c.val_size = 50
  c.model = "unet"
  c.models.unet.width = 8
  c.models.unet.depth = 2
  c.initial_size = 20
  c.initial_balanced = False
  c.query_size = 15
  c.budget = 50
  c.mc_samples = 8
  c.pool_subsample = 200
  c.train.learning_rate = 3e-3
  c.train.max_steps = 300
  c.train.min_steps = 200
  c.train.min_epochs = 0.0
  c.train.eval_every = 50
  c.train.patience = 2
  c.train.early_stopping = "miou"
  c.num_seeds = 3
  c.report_accuracy = 0.2
  c.workers = 2
  return c
