r"""The main protocol with the training recipe dal_jax used before issue 13's ablations (recipe
v1): at most 300 steps, early stopping on validation accuracy from the first evaluation on, no
minimum. The committed results made with it (``experiments/results/fashion_mnist_v1``,
``fashion_mnist_batch``, ``fashion_mnist_ensemble``, ``fashion_mnist_issue5``,
``fashion_mnist_stabilizing``) are reproduced exactly by this config:

  python -m experiments.compare --config=experiments/configs/fashion_mnist_v1.py \
      --acquisitions=random,entropy,bald --workdir=runs/fashion_mnist_v1
"""

from experiments.configs import fashion_mnist


def get_config():
  c = fashion_mnist.get_config()
  c.selector = "top_k"
  c.train.max_steps = 300
  c.train.min_steps = 0
  c.train.min_epochs = 0.0
  c.train.early_stopping = "accuracy"
  c.train.decay = "decoupled"
  c.train.weight_decay_scale = "constant"
  c.train.weight_decay = 1e-4
  c.train.batch_size = 32
  c.train.eval_every = 25
  c.train.patience = 3
  return c
