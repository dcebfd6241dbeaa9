r"""Kirsch, van Amersfoort & Gal 2019, "BatchBALD" (NeurIPS), MNIST protocol.

  python -m experiments.compare --config=experiments/configs/kirsch2019_mnist.py \
      --config.dataset=idx:/path/to/mnist --acquisitions=random,bald,batchbald \
      --workdir=runs/kirsch2019_mnist

Any directory of MNIST-format IDX files works; without ``--config.dataset`` it runs on
Fashion-MNIST. Their Table 1 counts the whole training set (initial points included) until 90%
accuracy: BALD with acquisition size 10 needs 120 points (median of 6 runs), BatchBALD 100.

Their protocol, as this config sets it:
  - a CNN with MC dropout after each convolution and before the last layer, consistent masks
    (one mask per MC sample shared by every pool point, Kirsch et al. §4) — here ``gal_cnn`` with
    channel dropout between the convolutions (``conv_dropout``), dropout after the conv block and
    before the head;
  - 20 initial points (class-balanced), b = 10 per round (to 300 labels here);
  - 100 MC-dropout samples; a random 10,000-point candidate subset per round;
  - a validation set of 1,024 points; batches of 64; "epochs" of 5,056 samples (79 steps) between
    validations; early stopping with patience 3; at most 1,500 steps;
  - the model re-initialised every round; no weight decay.

Deviations: their CNN is conv(32, 5x5)-dropout-maxpool-ReLU-conv(64, 5x5)-dropout-maxpool-ReLU-
dense(128)-dropout-dense(10) with dropout 0.5; dal_jax's ``gal_cnn`` keeps Gal et al.'s 4x4
kernels and 32 filters in both convolutions, with dropout 0.5 in all three places; their acquired
batch sizes went up to 40 and budgets to 300 points, this config stops at 300; 3 seeds (they
report medians of 6).
"""

from dal_jax import config


def get_config():
  c = config.default_config()
  c.protocol = "Kirsch, van Amersfoort & Gal 2019 (BatchBALD MNIST protocol)"
  c.dataset = "fashion_mnist"
  c.model = "gal_cnn"
  c.models.gal_cnn.dropout = (0.5, 0.5)
  c.models.gal_cnn.conv_dropout = 0.5
  c.initial_size = 20
  c.initial_balanced = True
  c.selector = "top_k"  # the papers' top-k BALD (stochastic: --config.selector=power)
  c.query_size = 10
  c.budget = 300
  c.mc_samples = 100
  c.pool_subsample = 10000
  c.val_size = 1024
  c.warm_start = False
  c.train.batch_size = 64
  c.train.learning_rate = 1e-3
  c.train.weight_decay = 0.0
  c.train.max_steps = 1500
  c.train.min_steps = 0  # their early stopping may stop from the first validation on
  c.train.min_epochs = 0.0
  c.train.eval_every = 79
  c.train.patience = 3
  c.train.early_stopping = "accuracy"
  c.num_seeds = 3
  c.report_accuracy = 0.90
  c.report_counting = "labels"
  return c
