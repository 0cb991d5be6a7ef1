"""Phase (d), evaluation: functions of plain tensors, plus the external classifier M.

- `scores`: Inception Score (eq. 2), Mode Score (eq. 3), class fidelity, confidence intervals.
- `fid`: Frechet distance and kernel distance between two feature sets.
- `diversity`: mean pairwise distance within a set, nearest-support distance and copy ratio.
- `evaluator`: the classifier M (a small ResNet), its training, probabilities and features.

Example:
    >>> import torch
    >>> from mtgan.metrics import inception_score, mode_score
    >>> probs = torch.eye(4)
    >>> round(inception_score(probs), 6), round(mode_score(probs, probs), 6)
    (4.0, 4.0)
"""

from mtgan.metrics.diversity import copy_ratio, nearest_distance, pairwise_diversity
from mtgan.metrics.evaluator import (
    Evaluator,
    extract_features,
    features_and_logits,
    predict_probs,
    probs_from_logits,
    to_model_input,
    train_evaluator,
)
from mtgan.metrics.fid import frechet_distance, kernel_inception_distance
from mtgan.metrics.scores import (
    class_fidelity,
    inception_score,
    mean_confidence_interval,
    mode_score,
    mode_score_che,
)

__all__ = [
    "Evaluator",
    "class_fidelity",
    "copy_ratio",
    "extract_features",
    "features_and_logits",
    "frechet_distance",
    "inception_score",
    "kernel_inception_distance",
    "mean_confidence_interval",
    "mode_score",
    "mode_score_che",
    "nearest_distance",
    "pairwise_diversity",
    "predict_probs",
    "probs_from_logits",
    "to_model_input",
    "train_evaluator",
]
