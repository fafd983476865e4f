"""Evaluation and diagnostics of trained EBMs.

* :mod:`ebmkit.evaluate.grid`: exact 2-D NLL on a grid (:func:`grid_nll`) and
  the standard evaluation of a data set (:func:`evaluate_dataset`).
* :mod:`ebmkit.evaluate.ais`: annealed importance sampling of ``log Z``.
* :mod:`ebmkit.evaluate.discrete`: likelihoods on bits (exact RBM sums, AIS on
  bits) and Ising coupling errors.
* :mod:`ebmkit.evaluate.classify`: accuracy, calibration, OOD AUROC and
  class-conditional samples of energies that are also classifiers (JEM).
* :mod:`ebmkit.evaluate.fid`: classifier features, Fréchet distance, label entropy.
* :mod:`ebmkit.evaluate.mmd`: maximum mean discrepancy.
* :mod:`ebmkit.evaluate.diagnose`: the guide's health check.
* :mod:`ebmkit.evaluate.long_run`: do long chains stay on the model's density?
* :mod:`ebmkit.evaluate.tails`: does the energy confine its mass, in any dimension?
"""

from ebmkit.errors import ClassifierWeightsError
from ebmkit.evaluate.ais import AISResult, ais_log_z, annealing_schedule, reverse_ais_log_z
from ebmkit.evaluate.classify import (
    accuracy,
    auroc,
    calibration_bins,
    class_probabilities,
    conditional_sample_scores,
    evaluate_classifier,
    expected_calibration_error,
    negative_log_likelihood,
    paired_bootstrap_difference,
    pooled_bootstrap_difference,
    shifted_images,
)
from ebmkit.evaluate.diagnose import diagnose
from ebmkit.evaluate.fid import (
    classifier_features,
    frechet_distance,
    frechet_distance_from_features,
    gaussian_blur,
    label_entropy,
    load_classifier,
    nearest_neighbour_distance,
)
from ebmkit.evaluate.grid import (
    TAIL_MASS_WARNING,
    GridNLL,
    evaluate_dataset,
    grid_nll,
    tail_warning,
)
from ebmkit.evaluate.long_run import density_tv, long_run_check
from ebmkit.evaluate.mmd import median_bandwidth, mmd
from ebmkit.evaluate.tails import tail_check

__all__ = [
    "accuracy",
    "auroc",
    "calibration_bins",
    "class_probabilities",
    "conditional_sample_scores",
    "evaluate_classifier",
    "expected_calibration_error",
    "negative_log_likelihood",
    "paired_bootstrap_difference",
    "pooled_bootstrap_difference",
    "shifted_images",
    "AISResult",
    "TAIL_MASS_WARNING",
    "ClassifierWeightsError",
    "GridNLL",
    "ais_log_z",
    "annealing_schedule",
    "classifier_features",
    "density_tv",
    "diagnose",
    "evaluate_dataset",
    "frechet_distance",
    "frechet_distance_from_features",
    "gaussian_blur",
    "grid_nll",
    "label_entropy",
    "load_classifier",
    "long_run_check",
    "median_bandwidth",
    "mmd",
    "nearest_neighbour_distance",
    "reverse_ais_log_z",
    "tail_check",
    "tail_warning",
]
