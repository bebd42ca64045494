"""The engagement LSTM: raw windows of a volunteer's last K classifications in,
probabilities of still working W minutes later out (one column per horizon).

The module carries its own preprocessing (signed log1p, train-set mean/std,
missing indicators) as buffers, so the logged MLflow model takes exactly what
`windows.gather_windows` produces: float32 [B, K, F], NaN for missing values
and all-NaN rows for left padding. Nothing has to be re-derived at scoring time.

Shape of the network:

    x [B, K, F] raw
      -> preprocess: z = ((slog1p? x) - mean) / std, NaN -> 0, + missing indicators
         padding rows (all NaN) -> all-zero input with is_real = 0
      -> the LSTM's input at each step: z_step - z_current (0 on padding), the
         step's missing indicators and is_real
      -> 2-layer LSTM over the K steps; the last step is always the current
         classification (padding is on the left), so its output summarizes the history
      -> logits = linear(z_current) + head(lstm_out_last): a logistic regression
         on the current row (the "wide" skip) plus what the history adds; the
         LSTM only has to learn the residual
      -> forward() returns sigmoid(logits) = P(continue), [B, H]

Why the history is fed as differences from the current step: with raw values
at every step, validation loss rose from the first epoch while training loss
fell, for every size and regularization tried. The recurrent path saw the same
user-level features (days since first seen, classifications and sessions so
far, previous-session lengths) repeated over up to K rows, enough to recognise
training volunteers and the training period rather than learn how sessions
end. Differences keep what a sequence can tell beyond the current row (tasks
slowing down, gaps growing, a session boundary showing as a jump in the
session features) and leave the absolute levels to the linear path. On the
sample (150k classifications) the history then gained ~0.02 validation
ROC-AUC per horizon over the linear path, where raw steps lost.

Only torch and numpy: importing this module is what makes torch load, so
nothing imported by definitions.py imports it at top level.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class Scaling:
    """Train-set preprocessing statistics, one entry per feature (raw column order).

    `log_transform[j]` says feature j goes through sign(x) * log1p(|x|) before
    standardizing: heavy-tailed counts and durations otherwise let a few huge
    values dominate the mean/std.
    """

    log_transform: np.ndarray  # bool [F]
    mean: np.ndarray  # float32 [F], after the optional log
    std: np.ndarray  # float32 [F], after the optional log, never 0

    def to_json(self, feature_names: list[str]) -> dict:
        return {
            name: {"signed_log1p": bool(lg), "mean": float(m), "std": float(s)}
            for name, lg, m, s in zip(feature_names, self.log_transform, self.mean, self.std)
        }


def signed_log1p(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


def fit_scaling(X: np.ndarray, skew_threshold: float = 2.0) -> Scaling:
    """Fit the scaling on training rows X [N, F] (NaN = missing), column-wise and vectorized.

    A feature is log-transformed when it spans more than 1 (so not a flag or a
    fraction) and its absolute skewness exceeds `skew_threshold`: this catches
    counts and gaps in seconds while leaving symmetric features alone. A column
    with no observed value gets mean 0 and std 1 (it then only feeds its
    missing indicator).
    """
    X = np.asarray(X, dtype=np.float64)
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: handled by nan_to_num
        mean, std = np.nanmean(X, axis=0), np.nanstd(X, axis=0)
        skew = np.nanmean(((X - mean) / std) ** 3, axis=0)
        spread = np.nanmax(X, axis=0) - np.nanmin(X, axis=0)
        log_transform = (np.nan_to_num(np.abs(skew)) > skew_threshold) & (np.nan_to_num(spread) > 1)
        Z = np.where(log_transform, signed_log1p(X), X)
        mean, std = np.nan_to_num(np.nanmean(Z, axis=0)), np.nan_to_num(np.nanstd(Z, axis=0))
    std = np.where(std > 1e-6, std, 1.0)
    return Scaling(log_transform, mean.astype(np.float32), std.astype(np.float32))


def preprocess_tabular(X: np.ndarray, scaling: Scaling) -> np.ndarray:
    """The model's preprocessing for a flat [N, F] matrix (used by the linear and forest baselines).

    Returns float32 [N, 2F]: scaled features with NaN -> 0, then missing indicators. Computed a block of
    rows at a time into the result, so the float64 temporaries are a block's, not N rows' (at 38.5M
    classifications the whole test period at once took about 6 GB on top); the same values either way.
    """
    n, f = X.shape
    out = np.empty((n, 2 * f), dtype=np.float32)
    for start in range(0, n, TABULAR_BLOCK_ROWS):
        block = X[start : start + TABULAR_BLOCK_ROWS]
        missing = np.isnan(block)
        Z = np.where(scaling.log_transform, signed_log1p(block), block)
        Z = (Z - scaling.mean) / scaling.std
        out[start : start + len(block), :f] = np.where(missing, 0.0, Z)
        out[start : start + len(block), f:] = missing
    return out


TABULAR_BLOCK_ROWS = 262_144


class EngagementLSTM(nn.Module):
    """Two-layer LSTM over the last K classifications (as differences from the current one), plus a linear skip."""

    def __init__(
        self,
        n_features: int,
        n_horizons: int,
        scaling: Scaling,
        hidden_size: int = 64,
        num_layers: int = 2,
        dropout: float = 0.2,
    ):
        super().__init__()
        self.register_buffer("log_transform", torch.as_tensor(scaling.log_transform, dtype=torch.bool))
        self.register_buffer("mean", torch.as_tensor(scaling.mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(scaling.std, dtype=torch.float32))
        step_size = 2 * n_features + 1  # scaled values, missing indicators, is_real
        self.lstm = nn.LSTM(
            step_size, hidden_size, num_layers=num_layers, batch_first=True, dropout=dropout if num_layers > 1 else 0.0
        )
        self.linear = nn.Linear(step_size, n_horizons)  # the "wide" part: logistic regression on the current row
        # the head sees the history summary only: a nonlinear map of the current row's
        # absolute values overfits the training period the way the tree baselines do
        self.head = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(hidden_size, hidden_size),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_size, n_horizons),
        )
        # Start as the logistic regression alone: the history path begins at 0
        # and grows only as far as it lowers the loss (and early stopping allows).
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """[B, K, F] raw -> [B, K, 2F+1]; padding rows (all NaN) become all zeros."""
        missing = torch.isnan(x)
        is_real = ~missing.all(dim=-1, keepdim=True)
        z = torch.where(self.log_transform, torch.sign(x) * torch.log1p(torch.abs(x)), x)
        z = torch.nan_to_num((z - self.mean) / self.std, nan=0.0)
        step = torch.cat([z, missing.to(z.dtype), is_real.to(z.dtype)], dim=-1)
        return step * is_real.to(z.dtype)

    def history_inputs(self, steps: torch.Tensor) -> torch.Tensor:
        """[B, K, 2F+1] preprocessed -> the LSTM's input: scaled values minus the current step's, then the
        step's missing indicators and is_real. Padding stays all zeros; the current step's differences are 0."""
        n_features = self.mean.shape[0]
        is_real = steps[..., -1:]
        delta = (steps[..., :n_features] - steps[:, -1:, :n_features]) * is_real
        return torch.cat([delta, steps[..., n_features:]], dim=-1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        steps = self.preprocess(x)
        out, _ = self.lstm(self.history_inputs(steps))
        return self.linear(steps[:, -1]) + self.head(out[:, -1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Probabilities of continuing, [B, H], columns in horizon order."""
        return torch.sigmoid(self.logits(x))


def fit_wide(model: EngagementLSTM, current: torch.Tensor, targets: torch.Tensor, l2: float = 1e-4) -> float:
    """Fit the linear path alone, to convergence, on training rows' current features (raw [N, F]).

    Full-batch L-BFGS with an L2 penalty: the same problem as the logistic
    baseline, solved as well. The LSTM then starts from that model and can only
    add what the history is worth on validation (early stopping sees this
    starting point too). Returns the final training loss (without the penalty).
    """
    steps = model.preprocess(current[:, None, :])[:, 0].detach()
    optimizer = torch.optim.LBFGS(model.linear.parameters(), lr=1.0, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = masked_bce(model.linear(steps), targets) + l2 * model.linear.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)  # returns the loss at the *start*; report the end
    with torch.no_grad():
        return float(masked_bce(model.linear(steps), targets))


def masked_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean BCE-with-logits over the known labels only; NaN targets (censored or purged) count for nothing."""
    known = ~torch.isnan(targets)
    losses = nn.functional.binary_cross_entropy_with_logits(
        logits, torch.nan_to_num(targets, nan=0.0), reduction="none"
    )
    return (losses * known).sum() / known.sum().clamp(min=1)


def train_step(
    model: EngagementLSTM, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """One AdamW step on a batch: masked BCE, gradients clipped to norm 1. Returns the batch's loss (a tensor).

    The one step of training, its cost calibration and the benchmarks' bare loops.
    """
    loss = masked_bce(model.logits(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return loss
