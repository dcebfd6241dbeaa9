r"""Gal, Islam & Ghahramani 2017, "Deep Bayesian Active Learning with Image Data" (ICML), MNIST.

  python -m experiments.compare --config=experiments/configs/gal2017_mnist.py \
      --config.dataset=idx:/path/to/mnist --acquisitions=random,entropy,bald \
      --workdir=runs/gal2017_mnist

Any directory of MNIST-format IDX files works (``train-images-idx3-ubyte`` etc., gzipped or not);
without ``--config.dataset`` it runs on Fashion-MNIST. Their Table 1 reports the number of
*acquired* images (initial set excluded) to reach 90% accuracy (10% error): BALD 145, random 255.

Their protocol, as this config sets it:
  - their CNN: conv(32, 4x4)-ReLU-conv(32, 4x4)-ReLU-maxpool(2)-dropout(0.25)-dense(128)-ReLU-
    dropout(0.5)-dense(10) (``gal_cnn``);
  - 20 class-balanced initial points, 10 acquired per round up to 1,000 labels;
  - acquisition with 100 MC-dropout samples over a random subset of 2,000 pool points per round;
  - the model re-initialised and retrained from scratch every round (``warm_start=False``);
  - a validation set of 100 points; the full 10,000-image test set;
  - Adam with an L2 penalty scaled with the training-set size (c / N, c = 3.5 in their Keras
    code: ``decay="l2"``, ``weight_decay_scale="inverse_n"``, λ = 2c = 7), batches of 128,
    50 epochs.

Deviations (dal_jax's runner, stated so a reader can weigh them):
  - their 50 epochs become at least ``max(50 steps, 50 epochs)`` steps (``min_steps``,
    ``min_epochs``) with early stopping on the validation NLL after that, at most 500 steps; a
    step draws a batch of 128 with replacement, so at 20 labels a "step" is not a pass over the
    data as a Keras epoch is;
  - their penalty covers the dense layers' kernels; dal_jax's L2 covers every parameter;
  - they chose c per acquisition function on the validation set; this config fixes c;
  - 3 seeds (they average 3 repetitions).
"""

from dal_jax import config


def get_config():
  c = config.default_config()
  c.protocol = "Gal, Islam & Ghahramani 2017 (MNIST protocol)"
  c.dataset = "fashion_mnist"
  c.model = "gal_cnn"
  c.models.gal_cnn.dropout = (0.25, 0.5)
  c.models.gal_cnn.conv_dropout = 0.0
  c.initial_size = 20
  c.initial_balanced = True
  c.selector = "top_k"  # the papers' top-k BALD (stochastic: --config.selector=power)
  c.query_size = 10
  c.budget = 1000
  c.mc_samples = 100
  c.pool_subsample = 2000
  c.val_size = 100
  c.warm_start = False
  c.train.batch_size = 128
  c.train.learning_rate = 1e-3
  c.train.decay = "l2"
  c.train.weight_decay_scale = "inverse_n"
  c.train.weight_decay = 7.0
  c.train.min_steps = 50
  c.train.min_epochs = 50.0
  c.train.max_steps = 500
  c.train.eval_every = 25
  c.train.patience = 3
  c.train.early_stopping = "nll"
  c.num_seeds = 3
  c.report_accuracy = 0.90
  c.report_counting = "acquired"
  return c
