"""Where and on how many threads torch runs (and the baselines' OpenMP): one place for training, its
calibration and the benchmarks."""

import os


def pick_device(name: str) -> str:
    """ "auto" -> "cuda" when torch sees a GPU, else "cpu"; "cuda" without one is an error that says so."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f'device "{name}" asked for, but torch sees no CUDA device: use "auto" or "cpu"')
    return name


def cores() -> int:
    """The cores this process may run on."""
    return max(1, len(os.sched_getaffinity(0)))


def set_threads(threads: int) -> None:
    """Set torch's intra-op threads (0 = the cores this process may run on, never more)."""
    import torch

    torch.set_num_threads(threads if threads > 0 else cores())
