"""Acquisition functions: pure scores ``[S, N, C] -> [N]`` and selectors ``[N] -> [k]``."""

from dal_jax.acquisition._adversarial import deepfool_distance
from dal_jax.acquisition._adversarial import deepfool_perturbation
from dal_jax.acquisition._adversarial import dfal_scores
from dal_jax.acquisition._batchbald import BatchBALDResult
from dal_jax.acquisition._batchbald import batchbald
from dal_jax.acquisition._diversity import badge
from dal_jax.acquisition._diversity import cluster_margin
from dal_jax.acquisition._diversity import coreset
from dal_jax.acquisition._diversity import dmbal
from dal_jax.acquisition._diversity import entropy_gradnorm
from dal_jax.acquisition._diversity import expected_gradient_length
from dal_jax.acquisition._diversity import factored_sq_distances
from dal_jax.acquisition._diversity import gradient_embedding_factors
from dal_jax.acquisition._diversity import gradient_embeddings
from dal_jax.acquisition._diversity import kdpp
from dal_jax.acquisition._diversity import kmeans
from dal_jax.acquisition._diversity import kmeans_pp
from dal_jax.acquisition._diversity import kmeans_select
from dal_jax.acquisition._diversity import uncertainty_minus_redundancy
from dal_jax.acquisition._registry import ACQUISITIONS
from dal_jax.acquisition._registry import NONNEGATIVE_SCORES
from dal_jax.acquisition._registry import SELECTION_OPTIONS
from dal_jax.acquisition._registry import Acquisition
from dal_jax.acquisition._registry import Needs
from dal_jax.acquisition._registry import arguments
from dal_jax.acquisition._registry import batch_only
from dal_jax.acquisition._registry import check_options
from dal_jax.acquisition._registry import checked_select
from dal_jax.acquisition._registry import register_batch
from dal_jax.acquisition._registry import score_acquisition
from dal_jax.acquisition._learned import Spec
from dal_jax.acquisition._learned import dal
from dal_jax.acquisition._learned import ta_vaal
from dal_jax.acquisition._learned import vaal
from dal_jax.acquisition._learned import vaal_scores
from dal_jax.acquisition._learned import waal
from dal_jax.acquisition._learned import waal_uncertainty
from dal_jax.acquisition._registry import acquire
from dal_jax.acquisition._registry import get_acquisition
from dal_jax.acquisition._registry import register
from dal_jax.acquisition._registry import register_score
from dal_jax.acquisition._scores import bald
from dal_jax.acquisition._scores import consensus_kl
from dal_jax.acquisition._scores import least_confidence
from dal_jax.acquisition._scores import margin
from dal_jax.acquisition._scores import mean_log_probs
from dal_jax.acquisition._scores import mean_std
from dal_jax.acquisition._scores import predictive_entropy
from dal_jax.acquisition._scores import random_scores
from dal_jax.acquisition._scores import variation_ratios
from dal_jax.acquisition._scores import vote_entropy
from dal_jax.acquisition._selectors import SELECTORS
from dal_jax.acquisition._selectors import get_selector
from dal_jax.acquisition._selectors import power_sample
from dal_jax.acquisition._selectors import softmax_sample
from dal_jax.acquisition._selectors import softrank_sample
from dal_jax.acquisition._selectors import top_k

entropy = predictive_entropy

# The methods register the acquisitions that train networks of their own (DAL, VAAL, ...).
from dal_jax import methods as _methods  # noqa: E402,F401  pylint: disable=g-import-not-at-top
