r"""Fashion-MNIST cold start: the first labels chosen before any label exists.

  python -m experiments.compare --config=experiments/configs/fashion_mnist_cold_start.py \
      --acquisitions=random,typiclust_pca:typiclust:embeddings=pca:cold_start=typiclust \
      --workdir=runs/fashion_mnist_cold_start

The low-budget setting of TypiClust (Hacohen, Dekel & Weinshall 2022) and ProbCover (Yehuda et
al. 2022): 10 initial labels and 10 per round up to 60, with nothing labeled at the start. The
initial set is therefore *not* class-balanced here (balancing needs the labels a cold start does
not have): random draws it uniformly, a strategy given ``cold_start=typiclust`` (or probcover,
kmeans, coreset) chooses it on the pool's embeddings (``embeddings=pca`` or ``simclr``). Model,
recipe and candidate subsets are the main job's (``fashion_mnist.py``); 5 seeds.
"""

from dal_jax import config


def get_config():
  c = config.default_config()
  c.workers = 2  # two runs side by side in threads (the same results, sooner on 2 cores)
  c.initial_size, c.query_size, c.budget = 10, 10, 60
  c.initial_balanced = False
  c.num_seeds = 5
  c.report_accuracy = 0.60
  return c
