"""Acquisition functions: pure scores ``[S, N, C] -> [N]`` and selectors ``[N] -> [k]``."""

from dal_jax.acquisition._registry import ACQUISITIONS
from dal_jax.acquisition._registry import Acquisition
from dal_jax.acquisition._registry import acquire
from dal_jax.acquisition._registry import get_acquisition
from dal_jax.acquisition._registry import register
from dal_jax.acquisition._registry import register_score
from dal_jax.acquisition._scores import bald
from dal_jax.acquisition._scores import least_confidence
from dal_jax.acquisition._scores import margin
from dal_jax.acquisition._scores import mean_log_probs
from dal_jax.acquisition._scores import mean_std
from dal_jax.acquisition._scores import predictive_entropy
from dal_jax.acquisition._scores import random_scores
from dal_jax.acquisition._scores import variation_ratios
from dal_jax.acquisition._selectors import SELECTORS
from dal_jax.acquisition._selectors import get_selector
from dal_jax.acquisition._selectors import power_sample
from dal_jax.acquisition._selectors import softmax_sample
from dal_jax.acquisition._selectors import softrank_sample
from dal_jax.acquisition._selectors import top_k

entropy = predictive_entropy
