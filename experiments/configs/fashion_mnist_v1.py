r"""The main protocol with the training recipe dal_jax used before issue 13's ablations (recipe
v1): at most 300 steps, early stopping on validation accuracy from the first evaluation on, no
minimum. The committed results made with it (``experiments/results/fashion_mnist_v1``,
``fashion_mnist_batch``, ``fashion_mnist_ensemble``, ``fashion_mnist_issue5``,
``fashion_mnist_stabilizing``) are reproduced exactly by this config:

  python -m experiments.compare --config=experiments/configs/fashion_mnist_v1.py \
      --acquisitions=random,entropy,bald --workdir=runs/fashion_mnist_v1
"""

from experiments.configs import fashion_mnist
from experiments.configs import recipes


def get_config():
  return recipes.pin_v1(fashion_mnist.get_config(), max_steps=300, patience=3)
