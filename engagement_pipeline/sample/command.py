"""`engagement generate`: write a synthetic export from the command line."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from engagement_pipeline.sample.files import DEFAULT_CLASSIFICATIONS, DEFAULT_SEED, SAMPLE_FILE_NAME
from engagement_pipeline.sample.render import write_csv
from engagement_pipeline.sample.shapes import DEFAULT_SHAPE, SHAPES
from engagement_pipeline.sample.simulation import simulate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="engagement generate",
        description="Write a synthetic Zooniverse classification export (Panoptes CSV format).",
    )
    parser.add_argument("--rows", type=int, default=DEFAULT_CLASSIFICATIONS, help="classifications to write")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed")
    parser.add_argument(
        "--shape",
        choices=tuple(SHAPES),
        default=DEFAULT_SHAPE,
        help="how the volunteers behave: default (the bundled sample), traits or habits (see engagement_pipeline/sample/shapes.py)",
    )
    parser.add_argument(
        "--out", type=Path, default=Path(SAMPLE_FILE_NAME), help="output file (.csv, or .csv.gz for gzip)"
    )
    args = parser.parse_args(argv)
    if args.rows < 1:
        parser.error("--rows must be at least 1")
    t0 = time.perf_counter()
    sim = simulate(args.rows, args.seed, args.shape)
    path = write_csv(args.out, sim)
    size = path.stat().st_size
    print(
        f"wrote {path}: {args.rows:,} classifications, {sim.n_users:,} volunteers "
        f"({sim.n_anonymous:,} not logged in), {sim.n_sessions:,} browser sessions, "
        f"{size / 1e6:,.1f} MB in {time.perf_counter() - t0:.1f}s (seed {args.seed}, shape {args.shape})"
    )
    return 0
