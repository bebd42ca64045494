"""A generated export cached in benchmarks/out/, shared by the ingest benchmarks."""

import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"


def cached_export(rows: int, seed: int = 11) -> Path:
    """benchmarks/out/export-<rows>.csv, written once by the bundled generator."""
    from engagement_pipeline.sample import write_export

    OUT.mkdir(exist_ok=True)
    export = OUT / f"export-{rows}.csv"
    if not export.exists():
        started = time.perf_counter()
        write_export(export, n_classifications=rows, seed=seed)
        print(
            f"generated {export} ({export.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - started:.1f}s",
            flush=True,
        )
    return export
