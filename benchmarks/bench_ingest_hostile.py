"""Hostile exports (issue 23): peak memory of the ingest on the worst cases against a normal file of the
same size, the code before issue 23 beside this one.

    git worktree add --detach /tmp/ingest-before <commit before issue 23>
    .venv/bin/python benchmarks/bench_ingest_hostile.py --before /tmp/ingest-before

Each case is one file, ingested into a fresh home by a child Python that
imports the package of one checkout (PYTHONPATH); its peak RSS is the kernel's
VmHWM of the whole child process (DuckDB's threads included). A child whose
RSS passes --cap-mb is killed (the old code takes 17 GB on the wide header)
and reported as such. Files are generated in benchmarks/out/hostile/.
"""

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from engagement_pipeline_tests import hostile_inputs as hostile  # noqa: E402

OUT = REPO / "benchmarks" / "out" / "hostile"

CASES = {
    # name: (builder, what it is)
    "normal-82KB": (lambda p: hostile.normal(p, 430), "a normal export of the same size as the next"),
    "extra-fields-82KB": (lambda p: hostile.extra_fields(p, 40_000), "20 good rows, one with 40,000 extra fields"),
    "normal-4.2MB-crlf": (lambda p: hostile.normal(p, 22_500, ending="\r\n"), "a normal CRLF export, same size"),
    "wide-header-4.2MB-crlf": (
        lambda p: hostile.wide_header_crlf(p, 10_000, rows=200, header_like_rows=30, name="c{:05d}x"),
        "CRLF, 10,005 columns (80 KB header), 200 rows and 30 rows repeating the header",
    ),
    "wide-header-190KB-crlf": (
        lambda p: hostile.wide_header_crlf(p, 10_000, rows=200, name="col_{:05d}_long_nm"),
        "CRLF, 10,005 columns in a 190 KB header: the old 64 KB read saw 3,452 of them, as in the issue",
    ),
    "wide-header-4.2MB-crlf-values": (
        lambda p: hostile.wide_header_crlf(p, 10_000, rows=200, name="col_{:05d}_long_nm", value="v"),
        "the same with a value in every field (4.2 MB): each row has 6,553 fields more than the old code read",
    ),
    "normal-4.2MB-crlf-again": (lambda p: hostile.normal(p, 23_500, ending="\r\n"), "a normal CRLF export, 4.2 MB"),
    "wide-5000-rows": (
        lambda p: hostile.wide_header_crlf(p, 10_000, rows=5_000, name="c{:05d}x", value="v"),
        "10,005 columns, 5,000 rows, every field set (100 MB): DuckDB's reader on a wide file",
    ),
    "extra-fields-50MB": (
        lambda p: hostile.many_extra_fields(p, rows=5_000, fields=10_000),
        "5,000 rows, every other one with 10,000 extra fields (50 MB)",
    ),
    "binary-junk-100MB": (
        lambda p: hostile.binary_junk(p, 100 * 2**20),
        "1,000 good rows, 100 MB of random bytes, 1,000 good rows",
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, help="a checkout of the code before issue 23 (omit: this one only)")
    parser.add_argument("--cap-mb", type=float, default=4096)
    parser.add_argument("--cases", nargs="*", default=list(CASES))
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    sides = ([("before", args.before)] if args.before else []) + [("now", REPO)]
    print(f"| case | file | {' | '.join(f'{side}: peak RSS, outcome' for side, _ in sides)} |")
    print(f"| --- | --- | {' | '.join('---' for _ in sides)} |")
    for name in args.cases:
        build, _ = CASES[name]
        folder = OUT / name
        folder.mkdir(exist_ok=True)
        export = build(folder / "export.csv")
        cells = []
        for _, repo in sides:
            with tempfile.TemporaryDirectory(dir=OUT) as home:
                got = hostile.ingest_in_child(repo, Path(home) / "home", folder, cap_mb=args.cap_mb)
            outcome = got.get("killed") or got.get("refused") or got.get("crashed")
            outcome = outcome or f"{got['stored']} stored, {got['rejected']} rejected"
            cells.append(f"{got['peak_rss_mb']:,.0f} MB, {got['seconds']:.1f} s, {outcome[:90]}")
        print(f"| {name} | {export.stat().st_size / 1e6:.2f} MB | {' | '.join(cells)} |", flush=True)


if __name__ == "__main__":
    main()
