r"""Fashion-MNIST, Gal et al. 2017 protocol scaled to a 2-core CPU.

  python -m experiments.run --config=experiments/configs/fashion_mnist.py \
      --config.acquisition=bald --workdir=runs/fmnist_bald

Every field can be overridden with ``--config.<field>=<value>``.
"""

import ml_collections

# Options of the learned acquisitions that can be set from the command line.
ACQUISITION_OPTIONS = (("steps", int), ("batch_size", int), ("learning_rate", float),
                       ("sub_batches", int), ("latent_dim", int), ("beta", float),
                       ("adversary_weight", float), ("gradient_penalty", float),
                       ("selection", float))


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  # Data: the Debian IDX files, prepared once into tfds array_record files.
  c.dataset = "fashion_mnist"
  c.data_dir = ml_collections.config_dict.placeholder(str)  # None: tfds's ~/tensorflow_datasets
  c.split_seed = 0
  c.val_size = 1000
  c.pool_size = ml_collections.config_dict.placeholder(int)  # None: all remaining (59,000)
  c.test_size = ml_collections.config_dict.placeholder(int)  # None: the full 10,000
  c.imbalance_ratio = 1.0
  c.ood_fraction = 0.0

  # Model.
  c.model = "gal_cnn"
  c.model_kwargs = ml_collections.ConfigDict()

  # Acquisition.
  c.acquisition = "bald"
  c.selector = "top_k"
  c.beta = 1.0
  c.mc_samples = 20
  c.pool_subsample = 5000  # score a random 5,000 unlabeled candidates per round (0 = all)
  c.chunk_size = 1024
  # Hyper-parameters of a learned acquisition (dal / vaal / waal; None = the method's default,
  # see DALConfig / VAALConfig / WAALConfig in dal_jax.acquisition), e.g.
  # --config.acquisition=vaal --config.acquisition_options.beta=2.0
  c.acquisition_options = ml_collections.ConfigDict(
      {name: ml_collections.config_dict.placeholder(kind) for name, kind in ACQUISITION_OPTIONS})

  # Loop.
  c.initial_size = 20
  c.initial_balanced = True
  c.query_size = 20
  c.budget = 220
  c.target_accuracy = ml_collections.config_dict.placeholder(float)  # None: run to the budget
  c.warm_start = False
  # Stabilizing predictions (Bloodgood & Vijay-Shanker 2009): Cohen's kappa between successive
  # models on a fixed unlabeled stop set; recorded per round, stops the run only if asked.
  c.stabilizing_stop_set = 0  # stop-set size (0 = off; the paper uses a few thousand)
  c.stabilizing_window = 3
  c.stabilizing_threshold = 0.99
  c.stop_on_stabilizing = False

  # DFAL's adversarial training (Ducoffe & Precioso 2018): each selected point's DeepFool
  # adversarial copy joins training with the point's label (any acquisition; use with dfal).
  c.adversarial_training = False

  # CEAL pseudo-labels (Wang et al. 2016): unlabeled points with predictive entropy below
  # ceal_delta0 - round * ceal_decay (nats) join training with their predicted label (0 = off).
  c.ceal_delta0 = 0.0
  c.ceal_decay = 0.005

  # Training (re-initialised every round unless warm_start).
  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 32
  c.train.learning_rate = 1e-3
  c.train.weight_decay = 1e-4
  c.train.max_steps = 300
  c.train.eval_every = 25
  c.train.patience = 3
  c.train.mixup_alpha = 0.0  # > 0: mixup augmentation (Zhang et al. 2018)
  # LL4AL (acquisition=ll4al): weight λ and margin ξ of the loss-prediction ranking loss.
  c.train.loss_prediction_weight = 1.0
  c.train.ranking_margin = 1.0
  # Semi-supervised rounds (FixMatch, Sohn et al. 2020), for any acquisition: > 0 adds the
  # consistency loss on unlabeled pool points with this weight.
  c.train.unlabeled_weight = 0.0
  c.train.unlabeled_ratio = 1  # unlabeled inputs per labeled input in a step
  c.train.confidence_threshold = 0.95
  # WAAL's training side (Shui et al. 2020): > 0 adds a critic on pre-logits and aligns labeled
  # and unlabeled representations adversarially with this weight (use with acquisition=waal).
  c.train.waal_alpha = 0.0
  c.train.waal_gradient_penalty = 10.0

  # Ensembles and devices.
  c.ensemble_size = 1  # > 1: a deep ensemble trained in parallel (with mc_samples > 0: DEBAL)
  c.num_devices = 0  # devices to shard over (0 = all visible devices)
  c.distributed = False  # jax.distributed.initialize() for multi-host (TPU pod slice, GPU cluster)
  c.parallel_seeds = False  # run the seeds' rounds as one vmapped program (same results)

  # Run.
  c.seed = 0
  c.num_seeds = 3
  c.checkpoints_to_keep = 2
  c.progress = True
  # For comparisons: accuracy whose label cost is reported (does not stop the run).
  c.report_accuracy = 0.70
  return c
