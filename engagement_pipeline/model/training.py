"""Training: the dataset, the time split and the LSTM's training loop.

    load_dataset   features -> FeatureMatrix, labels -> [N, H] (NaN = unknown)
    time_split     70/15/15 on created_at, purging labels that peek into the next period
    train_lstm     the linear start, then mini-batches of windows gathered by index, AdamW,
                   early stopping on validation loss; `stopping_summary` says how it ended

What comes after (baselines, evaluation, registry, plots) lives in its own
module; `assets.py` beside it is the asset that runs the steps in order.
torch is imported inside the functions that use it: definitions.py imports
this module, which must load fast.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import dagster as dg
import numpy as np
from pydantic import Field

from engagement_pipeline.model.budget import DEFAULT_MAX_TRAIN_EXAMPLES, Progress, budget_words, training_budget
from engagement_pipeline.model.device import pick_device
from engagement_pipeline.model.evaluation import roc_auc_or_nan
from engagement_pipeline.model.windows import FeatureMatrix, gather_windows, load_feature_matrix

if TYPE_CHECKING:
    from engagement_pipeline.model.lstm import EngagementLSTM, Scaling
MICROS_PER_MINUTE = 60_000_000
# A label at t for horizon W is decided by data up to t + 2W, not t + W: a
# "stops" label needs the session's last classification e < t + W *and* W
# minutes of silence after it (CONTRACT.md: data_end - e >= W).
LABEL_LOOKAHEAD_HORIZONS = 2


class TrainingConfig(dg.Config):
    """Run config of `engagement_model`. Defaults train the demo (~150k classifications) in ~2 minutes on 2 cores.

    Every field carries its description, which the Dagster launchpad shows.
    """

    window: int = Field(
        20, description="K: classifications per window (the current one and up to K-1 earlier ones of the same user)."
    )
    epochs: int = Field(
        6, description="Most epochs after the linear start (epoch 0); early stopping usually ends sooner."
    )
    patience: int = Field(2, description="Epochs without a lower validation loss before training stops.")
    batch_size: int = Field(256, description="Windows per optimizer step.")
    lr: float = Field(1e-3, description="AdamW learning rate.")
    weight_decay: float = Field(0.05, description="AdamW weight decay.")
    hidden_size: int = Field(32, description="LSTM hidden units per layer.")
    num_layers: int = Field(2, description="Stacked LSTM layers.")
    dropout: float = Field(0.3, description="Dropout between LSTM layers and in the head.")
    seed: int = Field(0, description="Seed for numpy and torch: the same data and seed train the same model.")
    train_fraction: float = Field(0.70, description="Share of the time line (by created_at) used for training.")
    val_fraction: float = Field(
        0.15, description="Share used for validation (early stopping); the rest is the test period."
    )
    max_train_examples: int | None = Field(
        DEFAULT_MAX_TRAIN_EXAMPLES,
        description="Training examples per epoch, drawn afresh each epoch from the seeded generator (null = all of "
        "them, reshuffled). An export with fewer training examples uses every one each epoch; a bigger one sees a "
        "new sample of this size each epoch, which bounds an epoch's time (about 2-3 minutes per million on one "
        "core) without stopping the model from seeing most rows over the epochs. Lower it to train faster.",
    )
    max_val_examples: int = Field(
        40_000, description="Fixed random subset of the validation period used for early stopping."
    )
    max_wide_examples: int = Field(
        300_000,
        description="Training rows used to fit the linear (logistic) path before the LSTM trains; its penalty is "
        "chosen per horizon on validation from the logistic baseline's grid of C (model/paths.py).",
    )
    wide_lr_factor: float = Field(
        0.1, description="The linear path's learning rate, relative to `lr`, once the LSTM trains with it."
    )
    forest_max_train_rows: int = Field(
        100_000, description="Training rows for the random-forest baseline (100 trees, depth chosen on validation)."
    )
    baseline_max_candidates: int = Field(
        3,
        description="Candidates tried per baseline and horizon when choosing its key parameter on validation "
        "(small grids, in order: logistic C, gradient boosting learning rate x leaves, forest depth). Counted in "
        "candidates, not seconds, so a busy machine chooses the same.",
    )
    baseline_max_train_rows: int = Field(
        1_000_000,
        description="Training rows the baselines are fitted on: a sample drawn with `seed` when there are more "
        "(every row of a smaller export).",
    )
    baseline_max_val_rows: int = Field(
        1_000_000,
        description="Validation rows the baselines choose their parameters on (and gradient boosting stops early "
        "on): a sample drawn with `seed` when there are more. Only the chosen candidate predicts the test period, "
        "on every test row.",
    )
    baseline_threads: int = Field(
        1,
        description="OpenMP threads of the baselines (gradient boosting; 0 = every core). 1 by default: on a "
        "2-core machine with another busy process, one 200,000-row fit took 19.3 s on 2 threads and 2.1 s on 1 "
        "(OpenMP threads spin waiting for each other), and fitted the same model.",
    )
    bootstrap_resamples: int = Field(
        200,
        description="Volunteer-level bootstrap resamples behind every test metric's 95% interval, the lift "
        "intervals and the promotion gate.",
    )
    device: str = Field("auto", description='"auto" = CUDA when present, else CPU; or "cpu", "cuda".')
    torch_threads: int = Field(
        1,
        description="Intra-op threads (0 = every core). 1 by default: a small LSTM batch gains little from more, and "
        "with another busy process on a 2-core machine 2 threads ran 10x slower than 1 (spinning).",
    )


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Dataset:
    matrix: FeatureMatrix
    horizons: list[int]
    labels: np.ndarray  # float32 [N, H]: 1 continues, 0 stops, NaN unknown (censored / unlabelled)


def load_labels(con, classification_id: np.ndarray) -> tuple[list[int], np.ndarray]:
    """Pivot `labels` to [N, H] aligned with `classification_id`, NaN where no label, in SQL + searchsorted."""
    horizons = [h for (h,) in con.execute("select distinct horizon_minutes from labels order by 1").fetchall()]
    pivot = ", ".join(f"max(continues::float) filter (where horizon_minutes = ?) as h{i}" for i in range(len(horizons)))
    table = con.sql(
        f"select classification_id, {pivot} from labels group by classification_id order by classification_id",
        params=horizons,
    ).to_arrow_table()
    ids = table.column("classification_id").to_numpy()
    labels = np.full((len(classification_id), len(horizons)), np.nan, dtype=np.float32)
    if len(ids):
        at = np.clip(np.searchsorted(ids, classification_id), 0, len(ids) - 1)
        found = ids[at] == classification_id
        for i in range(len(horizons)):
            labels[found, i] = table.column(f"h{i}").to_numpy()[at[found]]
    return horizons, labels


def load_dataset(con) -> Dataset:
    """`features` and `labels`, without the user keys (training needs only where each user's rows start)."""
    matrix = load_feature_matrix(con, with_user_key=False)
    horizons, labels = load_labels(con, matrix.classification_id)
    return Dataset(matrix, horizons, labels)


@dataclass(frozen=True)
class Split:
    """Row indices of the three periods, and the labels after purging look-ahead across period boundaries."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    val_start_us: int
    test_start_us: int
    labels: np.ndarray  # [N, H]


def time_split(
    created_at: np.ndarray, labels: np.ndarray, horizons: list[int], train_fraction: float, val_fraction: float
) -> Split:
    """Split labelled rows by created_at quantiles; purge labels that see into the next period.

    A train label for horizon W at time t is kept only if t + 2W <= the start of
    validation (see LABEL_LOOKAHEAD_HORIZONS), and likewise validation against
    test; purging is per horizon, and a row with no label left is dropped.
    Windows may still look back into earlier periods: that is legitimate history.
    """
    labelled = ~np.isnan(labels).all(axis=1)
    if labelled.sum() < 3:
        raise ValueError("fewer than 3 labelled classifications: nothing to split")
    val_start, test_start = np.quantile(created_at[labelled], [train_fraction, train_fraction + val_fraction])
    val_start, test_start = int(val_start), int(test_start)
    in_train = created_at < val_start
    in_val = (created_at >= val_start) & (created_at < test_start)
    labels = np.array(labels, dtype=np.float32)  # one copy, purged column by column (no [N, H] temporaries)
    for h, minutes in enumerate(horizons):
        reaches = created_at + LABEL_LOOKAHEAD_HORIZONS * int(minutes) * MICROS_PER_MINUTE
        labels[(in_train & (reaches > val_start)) | (in_val & (reaches > test_start)), h] = np.nan
    known = ~np.isnan(labels).all(axis=1)
    return Split(
        train=np.flatnonzero(in_train & known),
        val=np.flatnonzero(in_val & known),
        test=np.flatnonzero((created_at >= test_start) & known),
        val_start_us=val_start,
        test_start_us=test_start,
        labels=labels,
    )


# --------------------------------------------------------------------------- the LSTM


def epoch_rows(rng: np.random.Generator, train: np.ndarray, per_epoch: int) -> np.ndarray:
    """One epoch's training rows in the order they are visited: a fresh draw of `per_epoch` without repeats
    (every row, reshuffled, when `per_epoch` covers them all)."""
    return rng.choice(train, size=min(per_epoch, len(train)), replace=False)


def batches(matrix: FeatureMatrix, labels: np.ndarray, rows: np.ndarray, window: int, batch_size: int):
    """Yield (windows [B, K, F], labels [B, H]) for `rows` in order, gathered by index per batch."""
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        yield gather_windows(matrix, chunk, window), labels[chunk]


def train_epoch(model, optimizer, batch_iter, device: str, progress: "Progress | None" = None) -> float:
    """One pass of masked-BCE AdamW steps; returns the example-weighted mean loss (progress: windows done)."""
    import torch

    from engagement_pipeline.model.lstm import train_step

    model.train()
    total, count = 0.0, 0
    for x, y in batch_iter:
        x = torch.from_numpy(x).to(device, non_blocking=True)
        y = torch.from_numpy(y).to(device, non_blocking=True)
        total += train_step(model, optimizer, x, y).item() * len(x)
        count += len(x)
        if progress is not None:
            progress.update(count)
    return total / max(count, 1)


def predict(model, matrix: FeatureMatrix, rows: np.ndarray, window: int, device: str, batch_size: int = 4096, say=None):
    """P(continue) [len(rows), H] from the in-process model (eval mode, no grad); `say` gets progress lines."""
    import torch

    model.eval()
    out, done = [], 0
    progress = Progress(say, "predicting", len(rows)) if say is not None else None
    with torch.no_grad():
        for x, _ in batches(matrix, np.empty((len(matrix), 0), np.float32), rows, window, batch_size):
            out.append(model(torch.from_numpy(x).to(device)).cpu().numpy())
            done += len(x)
            if progress is not None:
                progress.update(done)
    return np.concatenate(out) if out else np.empty((0, 0), np.float32)


def start_lstm(
    matrix: FeatureMatrix, split: Split, scaling: "Scaling", n_horizons: int, config: TrainingConfig, rng, val_rows
):
    """The network with its linear path fitted alone and tuned on `val_rows` (paths.tune_linear_path), and the
    optimizer for what follows.

    Returns (model, optimizer, scheduler, the linear start). The linear path then trains at `wide_lr_factor`
    of the rate.
    """
    import torch

    from engagement_pipeline.model.lstm import EngagementLSTM
    from engagement_pipeline.model.paths import tune_linear_path

    device = pick_device(config.device)
    model = EngagementLSTM(
        len(matrix.feature_names), n_horizons, scaling, config.hidden_size, config.num_layers, config.dropout
    ).to(device)
    wide_rows = np.sort(rng.permutation(split.train)[: config.max_wide_examples])
    start = tune_linear_path(
        model,
        torch.from_numpy(matrix.X[wide_rows]).to(device),
        torch.from_numpy(split.labels[wide_rows]).to(device),
        torch.from_numpy(matrix.X[val_rows]).to(device),
        split.labels[val_rows],
    )
    deep = [p for name, p in model.named_parameters() if not name.startswith("linear.")]
    optimizer = torch.optim.AdamW(
        [{"params": deep}, {"params": model.linear.parameters(), "lr": config.lr * config.wide_lr_factor}],
        lr=config.lr,
        weight_decay=config.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(config.epochs, 1))
    return model, optimizer, scheduler, start


def validation_scores(model, matrix: FeatureMatrix, rows: np.ndarray, y: np.ndarray, window: int, device: str):
    """(validation loss, ROC-AUC per horizon) of the model on `rows`."""
    import torch

    from engagement_pipeline.model.lstm import masked_bce

    p = predict(model, matrix, rows, window, device)
    with torch.no_grad():
        logits = torch.logit(torch.from_numpy(p).clamp(1e-6, 1 - 1e-6))
        loss = masked_bce(logits, torch.from_numpy(y)).item()
    return loss, [roc_auc_or_nan(y[:, i], p[:, i]) for i in range(y.shape[1])]


def train_lstm(
    matrix: FeatureMatrix,
    split: Split,
    scaling: "Scaling",
    n_horizons: int,
    config: TrainingConfig,
    on_epoch: Callable[[dict], None] = lambda row: None,
    say: Callable[[str], None] = lambda line: None,
) -> tuple["EngagementLSTM", list[dict]]:
    """Fit the LSTM with early stopping on validation loss; returns the best-epoch model (on CPU) and history.

    Epoch 0 is the linear path alone (a logistic regression on the current
    row); then the whole network trains with AdamW. The model kept is the best
    on validation loss, so the history path is only kept when it actually
    helps on later data than it was trained on. Training stops after
    `patience` epochs without a lower validation loss (see `stopping_summary`).

    Each epoch trains on `max_train_examples` rows drawn afresh from the seeded
    generator (every row when there are fewer), so an epoch's cost is bounded
    and the run is deterministic given the seed. The model and batches live on
    `config.device` (CUDA when "auto" finds it); the model returned is on the CPU.
    `say` gets the early estimate of the whole training (after the first batches)
    and a progress line with what remains at least every 30 s.

    Then, per horizon, the network or its tuned linear path alone, whichever
    has the higher validation ROC-AUC (paths.choose_paths): `model.path_choice`.
    """
    import torch

    from engagement_pipeline.model.paths import choose_paths

    started = time.perf_counter()
    device = pick_device(config.device)
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    if device == "cpu":
        torch.use_deterministic_algorithms(True)  # the same model on a quiet or a busy machine
    say(f"linear start on {min(len(split.train), config.max_wide_examples):,} training examples, on {device}")
    val_rows = np.sort(rng.permutation(split.val)[: config.max_val_examples])
    model, optimizer, scheduler, start = start_lstm(matrix, split, scaling, n_horizons, config, rng, val_rows)
    wide_loss = start.train_loss
    budget = training_budget(len(split.train), config)
    per_epoch = budget["examples_per_epoch"]
    history: list[dict] = []

    def record(epoch: int, train_loss: float, seconds: float) -> float:
        val_loss, aucs = validation_scores(model, matrix, val_rows, split.labels[val_rows], config.window, device)
        row = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "seconds": seconds}
        history.append(row | {f"val_roc_auc_{i}": auc for i, auc in enumerate(aucs)})
        on_epoch(history[-1])
        return val_loss

    best_loss, stale = record(0, wide_loss, time.perf_counter() - started), 0
    best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        rows = epoch_rows(rng, split.train, per_epoch)
        progress = Progress(say, f"epoch {epoch}/{config.epochs}", per_epoch, after=per_epoch * (config.epochs - epoch))
        if epoch == 1:  # the estimate of the whole training, from its first ~20 batches
            progress.estimate_after(20 * config.batch_size, lambda rate: say(budget_words(budget, rate)))
        train_loss = train_epoch(
            model, optimizer, batches(matrix, split.labels, rows, config.window, config.batch_size), device, progress
        )
        scheduler.step()
        if record(epoch, train_loss, time.perf_counter() - started) < best_loss - 1e-5:
            best_loss, stale = history[-1]["val_loss"], 0
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
            if stale >= config.patience:
                break
    model.load_state_dict(best_state)
    p_val = predict(model, matrix, val_rows, config.window, device)
    model.path_choice = choose_paths(
        model, start, p_val, torch.from_numpy(matrix.X[val_rows]).to(device), split.labels[val_rows]
    )
    return model.cpu().eval(), history


def stopping_summary(history: list[dict], epochs: int, patience: int) -> str:
    """How training ended, in words, e.g. "stopped after epoch 4: validation loss did not improve for 2 epochs
    (best 0.5123 at epoch 2)"."""
    best = min(history, key=lambda row: row["val_loss"])
    where = f"best {best['val_loss']:.4f} at epoch {best['epoch']}"
    if best["epoch"] == 0:
        where += ", the linear path alone"
    last = history[-1]["epoch"]
    if last < epochs:
        return (
            f"stopped early after epoch {last} of {epochs}: validation loss did not improve for {patience} "
            f"epoch{'s' if patience != 1 else ''} ({where}); the best epoch's weights are kept"
        )
    return f"ran all {epochs} epochs ({where}); the best epoch's weights are kept"
