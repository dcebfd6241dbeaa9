r"""Fashion-MNIST with large acquisition batches (k = 100), for batch-aware methods.

  python -m experiments.compare --config=experiments/configs/fashion_mnist_batch.py \
      --acquisitions=random,bald,batchbald,badge,coreset --workdir=runs/fashion_mnist_batch

Top-k of a per-sample score picks near-duplicates when k is large (Kirsch et al. 2019; Ash et al.
2020); this protocol is where BatchBALD, BADGE and core-set are meant to pay off.
"""

from experiments.configs import fashion_mnist_v1


def get_config():
  # Recipe v1, with which experiments/results/fashion_mnist_batch was measured.
  c = fashion_mnist_v1.get_config()
  c.query_size = 100
  c.budget = 520  # 20 initial + 5 rounds of 100
  c.report_accuracy = 0.78
  return c
