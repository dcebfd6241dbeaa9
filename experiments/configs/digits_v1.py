r"""The digits config with the training recipe of before issue 13's ablations (recipe v1: at most
100 steps, patience 2, early stopping on accuracy from the first evaluation, top-k selection): the
"before" curves of ``experiments/results/digits_before``.

  python -m experiments.compare --config=experiments/configs/digits_v1.py --config.num_seeds=5 \
      --acquisitions=random,entropy,bald --workdir=runs/digits_before
"""

from experiments.configs import digits
from experiments.configs import recipes


def get_config():
  return recipes.pin_v1(digits.get_config(), max_steps=100, patience=2)
