"""What training costs and how a long step says where it is.

    training_budget / budget_params / budget_text   what an epoch uses of the data (MLflow params, metadata)
    Progress                                        progress lines with what remains, at least every 30 s
    calibrate_examples_per_second                   a few timed batches of a fresh network on random windows
    estimate_training                               rows x measured cost: the LSTM's training time at a config
    up_front_estimate                               what `engagement run` says before it starts (export size, time)

Only numpy at module level: torch is imported inside `calibrate_examples_per_second`.
"""

import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from engagement_pipeline.ops.progress import duration

if TYPE_CHECKING:
    from engagement_pipeline.model.training import TrainingConfig

# Per-epoch training sample: 2M windows keep an epoch to minutes on one CPU core at any export size.
DEFAULT_MAX_TRAIN_EXAMPLES = 2_000_000
# The scaling's mean/std/skew are fitted on at most this many training rows (a seeded sample): beyond it the
# statistics no longer move, and the float64 copies of every training row would cost gigabytes.
MAX_SCALING_ROWS = 1_000_000
# A long step says where it is at least this often (seconds).
PROGRESS_SECONDS = 30.0


class Progress:
    """Says "<what>: done/total (share), elapsed, about T left" at most every `every` seconds.

    `after` adds what remains beyond this step (e.g. the later epochs) from the
    measured rate, so the estimate covers the whole of training.
    """

    def __init__(self, say: Callable[[str], None], what: str, total: int, every: float = PROGRESS_SECONDS,
                 after: int = 0, clock: Callable[[], float] = time.monotonic):  # fmt: skip
        self.say, self.what, self.total, self.every, self.after, self.clock = say, what, total, every, after, clock
        self.started = self.last = clock()
        self.first_at, self.first_words = None, lambda per_second: None

    def estimate_after(self, done: int, words: Callable[[float], None]) -> "Progress":
        """Once `done` items are through, call `words(items per second)` (the early estimate)."""
        self.first_at, self.first_words = done, words
        return self

    def update(self, done: int) -> None:
        now = self.clock()
        if self.first_at is not None and done >= self.first_at:
            self.first_at = None
            self.first_words(done / max(now - self.started, 1e-9))
        if now - self.last < self.every or not done or done >= self.total:
            return
        self.last = now
        elapsed = now - self.started
        left = elapsed / done * (self.total - done)
        later = f", then up to {duration(elapsed / done * self.after)} for the later epochs" if self.after else ""
        self.say(
            f"{self.what}: {done:,}/{self.total:,} ({done / self.total:.0%}), {duration(elapsed)}, "
            f"about {duration(left)} left{later}"
        )


def scaling_rows(train: np.ndarray, seed: int, cap: int = MAX_SCALING_ROWS) -> np.ndarray:
    """The training rows the scaling is fitted on: all of them, or a seeded sample of `cap` (sorted)."""
    if len(train) <= cap:
        return train
    return np.sort(np.random.default_rng(seed).choice(train, size=cap, replace=False))


def training_budget(n_train: int, config: "TrainingConfig") -> dict:
    """What training will use: examples per epoch, whether that is every row, and the most windows in all."""
    per_epoch = min(n_train, config.max_train_examples or n_train)
    return {
        "train_examples": n_train,
        "examples_per_epoch": per_epoch,
        "every_row_each_epoch": per_epoch == n_train,
        "max_epochs": config.epochs,
        "max_windows": per_epoch * config.epochs,
    }


SHORTEN = (
    "to shorten it, lower `max_train_examples` (examples per epoch) or `epochs` in the run config of "
    "engagement_model (`engagement run --train max_train_examples=500000`, or the Dagster launchpad)"
)


def budget_words(budget: dict, per_second: float) -> str:
    """The early estimate of training: examples an epoch, the time of one and of all, and how to shorten it."""
    if budget["every_row_each_epoch"]:
        sample = "every training example"
    else:
        sample = f"a new sample of the {budget['train_examples']:,} each epoch"
    epoch = budget["examples_per_epoch"] / max(per_second, 1e-9)
    return (
        f"training: {budget['examples_per_epoch']:,} examples an epoch ({sample}) at {per_second:,.0f} a second: "
        f"about {duration(epoch)} an epoch, up to {duration(epoch * budget['max_epochs'])} for "
        f"{budget['max_epochs']} epochs (early stopping usually ends sooner); {SHORTEN}"
    )


def budget_params(n_train: int, n_val: int, config: "TrainingConfig") -> dict:
    """What training used of the data (MLflow params; the asset's `training_budget` says it in words)."""
    budget = training_budget(n_train, config)
    return {
        "train_examples_per_epoch": budget["examples_per_epoch"],
        "train_every_row_each_epoch": budget["every_row_each_epoch"],
        "n_val_used": min(n_val, config.max_val_examples),
        "n_scaling_rows": len(scaling_rows(np.arange(n_train), config.seed)),
    }


def budget_text(n_train: int, n_val: int, config: "TrainingConfig", epochs_run: int) -> str:
    """e.g. "2,000,000 of 27,000,000 training examples an epoch, a new seeded sample each; 4 epochs; ..."."""
    used = budget_params(n_train, n_val, config)
    per_epoch = used["train_examples_per_epoch"]
    how = "every one, reshuffled" if used["train_every_row_each_epoch"] else "a new seeded sample each"
    return (
        f"{per_epoch:,} of {n_train:,} training examples an epoch ({how}); {epochs_run} epoch"
        f"{'s' if epochs_run != 1 else ''} after the linear start; validation on {used['n_val_used']:,} of "
        f"{n_val:,}; test on every example"
    )


def calibrate_examples_per_second(
    config: "TrainingConfig", n_features: int, n_horizons: int, batches: int = 6
) -> float:
    """Training examples a second of this config's network on this machine: a fresh model, random windows of
    the real shape, `batches` timed optimizer steps after one warm-up (about a second on one core)."""
    import torch

    from engagement_pipeline.model.device import pick_device, set_threads
    from engagement_pipeline.model.lstm import EngagementLSTM, Scaling, train_step

    set_threads(config.torch_threads)
    device = pick_device(config.device)
    generator = torch.Generator().manual_seed(config.seed)
    scaling = Scaling(np.zeros(n_features, bool), np.zeros(n_features, np.float32), np.ones(n_features, np.float32))
    model = EngagementLSTM(n_features, n_horizons, scaling, config.hidden_size, config.num_layers, config.dropout)
    model = model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
    x = torch.randn(config.batch_size, config.window, n_features, generator=generator).to(device)
    y = (torch.rand(config.batch_size, n_horizons, generator=generator) < 0.5).float().to(device)
    started = 0.0
    for step in range(batches + 1):
        if step == 1:
            started = time.perf_counter()
        train_step(model, optimizer, x, y).item()
    return batches * config.batch_size / (time.perf_counter() - started)


# The share of classifications that are training examples (70% of the time line, less purged and unlabelled
# rows): 0.70 on generated exports of 100k and 1M rows. Turns an export's size into training examples.
TRAIN_SHARE = 0.70


def estimate_training(classifications: int, config: "TrainingConfig", per_second: float) -> dict:
    """Seconds of the LSTM's training at most (every epoch run), from the export's size and a measured rate.

    Evaluating validation each epoch and the test period once costs about a third of training per example.
    """
    budget = training_budget(int(classifications * TRAIN_SHARE), config)
    evaluated = min(int(classifications * 0.15), config.max_val_examples) * config.epochs + classifications * 0.15
    seconds = (budget["max_windows"] + evaluated / 3) / max(per_second, 1e-9)
    return budget | {"per_second": per_second, "seconds": seconds}


# --------------------------------------------------------------------------- before the run: the export's size

ESTIMATE_FROM_ROWS = 500_000  # smaller exports train in minutes: no estimate, no calibration
SAMPLE_BYTES = 4 << 20


def export_rows_estimate(path: Path) -> int:
    """Classifications in an export, roughly, from its size and the line length of its first 4 MB (decompressed
    for .csv.gz, with the compression ratio of that stretch). Reads at most a few MB."""
    size = path.stat().st_size
    with path.open("rb") as raw:
        if not path.name.lower().endswith(".gz"):
            head, consumed = raw.read(SAMPLE_BYTES), None
        else:
            inflate, parts, consumed, produced = zlib.decompressobj(16 + zlib.MAX_WBITS), [], 0, 0
            while produced < SAMPLE_BYTES and not inflate.eof and (chunk := raw.read(1 << 16)):
                parts.append(inflate.decompress(chunk))
                consumed += len(chunk) - len(inflate.unused_data)
                produced += len(parts[-1])
            head = b"".join(parts)
    lines = head.count(b"\n")
    if not head or lines < 2:
        return max(lines - 1, 0)
    uncompressed = size if consumed is None else size * len(head) / max(consumed, 1)
    return int(uncompressed / (len(head) / lines)) - 1  # less the header


def up_front_estimate(files: list[Path], config: "TrainingConfig", n_features: int = 29, n_horizons: int = 3) -> str:
    """What `engagement run` says before it starts: the export's size and the LSTM's training time at `config`
    (a few timed batches of the network on this machine), and which run config shortens it. "" when small."""
    rows = sum(export_rows_estimate(path) for path in files)
    if rows < ESTIMATE_FROM_ROWS:
        return ""
    estimate = estimate_training(rows, config, calibrate_examples_per_second(config, n_features, n_horizons))
    gigabytes = sum(path.stat().st_size for path in files) / 1e9
    sample = "every one" if estimate["every_row_each_epoch"] else "a new sample each epoch"
    return (
        f"about {rows:,} classifications in {len(files)} export file{'s' if len(files) != 1 else ''} "
        f"({gigabytes:.1f} GB). Training the LSTM at these settings: up to about {duration(estimate['seconds'])} "
        f"({estimate['examples_per_epoch']:,} of ~{estimate['train_examples']:,} training examples an epoch, "
        f"{sample}; up to {config.epochs} epochs; {estimate['per_second']:,.0f} examples a second measured here). "
        "To shorten it: `--train max_train_examples=500000` (examples an epoch) or `--train epochs=3`."
    )
