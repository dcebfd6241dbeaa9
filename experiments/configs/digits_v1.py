r"""The digits config with the training recipe of before issue 13's ablations (recipe v1: at most
100 steps, patience 2, early stopping on accuracy from the first evaluation, top-k selection): the
"before" curves of ``experiments/results/digits_before``.

  python -m experiments.compare --config=experiments/configs/digits_v1.py --config.num_seeds=5 \
      --acquisitions=random,entropy,bald --workdir=runs/digits_before
"""

from experiments.configs import digits


def get_config():
  c = digits.get_config()
  c.selector = "top_k"
  c.train.max_steps = 100
  c.train.min_steps = 0
  c.train.min_epochs = 0.0
  c.train.early_stopping = "accuracy"
  c.train.decay = "decoupled"
  c.train.weight_decay_scale = "constant"
  c.train.weight_decay = 1e-4
  c.train.eval_every = 25
  c.train.patience = 2
  return c
