r"""Fashion-MNIST, Gal et al. 2017 protocol scaled to a 2-core CPU.

  python -m experiments.run --config=experiments/configs/fashion_mnist.py \
      --config.acquisition=bald --workdir=runs/fmnist_bald

Gal CNN, 20 class-balanced initial labels, k = 20 per round up to 220 labels, S = 20 MC-dropout
samples over 5,000 random unlabeled candidates per round, 1,000 validation labels for early
stopping, the full 10k test set, 3 seeds. Training: at least max(300 steps, 20 epochs) before
early stopping on validation accuracy may stop, at most 1,000 steps, the best weights restored;
score acquisitions pick their batch by power sampling (Kirsch et al. 2023) — the two changes
issue 13's ablations found (``experiments/results/ablation_fashion_mnist``). These are
``dal_jax.config``'s defaults, except that two runs train side by side in threads
(``workers=2``: the same results, about a third less wall time on a 2-core CPU); every field
can be overridden with ``--config.<field>=<value>`` (``--help`` lists them).
"""

from dal_jax import config


def get_config():
  c = config.default_config()
  c.workers = 2
  return c
