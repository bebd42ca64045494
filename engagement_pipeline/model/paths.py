"""The network's two paths per horizon: its linear path, tuned like the logistic baseline, or the whole sequence model.

The network's logits per horizon are linear(current row) + head(history).
Two steps keep it from falling below the logistic baseline:

    tune_linear_path   fits the linear path alone (L-BFGS) for each C of the logistic baseline's grid
                       (baselines.LOGISTIC_C, the same penalty: l2 = 1 / (2 C n), the weights only) and keeps,
                       per horizon, the C with the best validation ROC-AUC, as the baseline chooses its C
    choose_paths       after training, per horizon, the trained network or that tuned linear path alone,
                       whichever has the higher validation ROC-AUC (the early-stopping rows); a horizon
                       that takes the linear path gets its tuned weights back and its history head zeroed,
                       so the logged model itself computes the chosen path and scoring needs nothing more

torch is imported inside the functions (training.py imports this module lazily).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SEQUENCE = "sequence model"


@dataclass
class LinearStart:
    """The tuned linear path: its weights (a copy), the chosen C per horizon, its training loss."""

    weight: object  # torch.Tensor [H, step]
    bias: object  # torch.Tensor [H]
    chosen_c: list[str]
    train_loss: float


@dataclass
class PathChoice:
    """Per horizon index: "sequence model" or "linear path (C=0.1)", with the validation ROC-AUC of both."""

    paths: list[str] = field(default_factory=list)
    val_roc_auc_sequence: list[float] = field(default_factory=list)
    val_roc_auc_linear: list[float] = field(default_factory=list)


def linear_probabilities(model, current) -> np.ndarray:
    """P(continue) [N, H] of the linear path alone on raw current rows (torch tensor [N, F])."""
    import torch

    with torch.no_grad():
        steps = model.preprocess(current[:, None, :])[:, 0]
        return torch.sigmoid(model.linear(steps)).cpu().numpy()


def tune_linear_path(model, current, targets, val_current, val_targets: np.ndarray) -> LinearStart:
    """Fit the linear path per C of the logistic grid; keep per horizon the C best on validation ROC-AUC."""
    import torch

    from engagement_pipeline.model.baselines import LOGISTIC_C
    from engagement_pipeline.model.evaluation import roc_auc_or_nan
    from engagement_pipeline.model.lstm import fit_wide

    n_known = max(1, int((~torch.isnan(targets)).sum()))
    n_horizons = targets.shape[1]
    best: list[tuple[float, int] | None] = [None] * n_horizons
    fits = []
    for i, c in enumerate(LOGISTIC_C):
        loss = fit_wide(model, current, targets, l2=1.0 / (2.0 * c * n_known))
        fits.append((model.linear.weight.detach().clone(), model.linear.bias.detach().clone(), loss))
        p_val = linear_probabilities(model, val_current)
        for h in range(n_horizons):
            score = roc_auc_or_nan(val_targets[:, h].astype(np.float64), p_val[:, h].astype(np.float64))
            score = score if np.isfinite(score) else -np.inf
            if best[h] is None or score > best[h][0]:  # ties keep the earlier (weaker penalty) C
                best[h] = (score, i)
    chosen = [b[1] for b in best]
    with torch.no_grad():
        for h, i in enumerate(chosen):
            model.linear.weight[h] = fits[i][0][h]
            model.linear.bias[h] = fits[i][1][h]
    from engagement_pipeline.model.lstm import masked_bce

    with torch.no_grad():
        steps = model.preprocess(current[:, None, :])[:, 0]
        train_loss = float(masked_bce(model.linear(steps), targets))
    return LinearStart(
        model.linear.weight.detach().clone(),
        model.linear.bias.detach().clone(),
        [f"C={LOGISTIC_C[i]:g}" for i in chosen],
        train_loss,
    )


def choose_paths(model, start: LinearStart, p_sequence: np.ndarray, val_current, val_targets) -> PathChoice:
    """Per horizon, keep the trained network or put the tuned linear path alone back (see the module)."""
    import torch

    from engagement_pipeline.model.evaluation import roc_auc_or_nan

    trained = (model.linear.weight.detach().clone(), model.linear.bias.detach().clone())
    with torch.no_grad():
        model.linear.weight.copy_(start.weight)
        model.linear.bias.copy_(start.bias)
    p_linear = linear_probabilities(model, val_current)
    with torch.no_grad():
        model.linear.weight.copy_(trained[0])
        model.linear.bias.copy_(trained[1])
    choice = PathChoice()
    head = model.head[-1]
    for h in range(p_sequence.shape[1]):
        y = val_targets[:, h].astype(np.float64)
        sequence = roc_auc_or_nan(y, p_sequence[:, h].astype(np.float64))
        linear = roc_auc_or_nan(y, p_linear[:, h].astype(np.float64))
        choice.val_roc_auc_sequence.append(sequence)
        choice.val_roc_auc_linear.append(linear)
        if np.isfinite(sequence) and (not np.isfinite(linear) or sequence > linear):
            choice.paths.append(SEQUENCE)
            continue
        choice.paths.append(f"linear path ({start.chosen_c[h]})")
        with torch.no_grad():
            model.linear.weight[h] = start.weight[h]
            model.linear.bias[h] = start.bias[h]
            head.weight[h] = 0.0
            head.bias[h] = 0.0
    return choice
