"""Seeding: the same seed gives the same weights and metrics on CPU.

:func:`seed_everything` changes process-wide state (RNGs, the deterministic-algorithms flag, cudnn flags);
:func:`preserved_global_state` puts all of it back, so library entry points (``uk.train``, ``uk.unlearn``,
``uk.evaluate``, a benchmark cell) leave the caller's process as they found it.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

_CUBLAS = "CUBLAS_WORKSPACE_CONFIG"
_CUDNN_FLAGS = ("enabled", "benchmark", "deterministic", "allow_tf32")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch, request deterministic kernels, and return a torch ``Generator``.

    Data order is drawn from the returned CPU generator, never from global state, so two runs with the
    same seed see the same batches.
    """
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    if torch.backends.cudnn.is_available():
        torch.backends.cudnn.benchmark = False
    g = torch.Generator()
    g.manual_seed(seed)
    return g


@contextmanager
def preserved_global_state() -> Iterator[None]:
    """Save the process-wide state that training and seeding change, and restore it on exit (also on error).

    Covers torch's intra-op thread count, ``torch.use_deterministic_algorithms`` (flag and ``warn_only``), the
    torch CPU RNG (and CUDA's / MPS's where available), Python's ``random`` and NumPy's global RNG, the cudnn
    flags and ``CUBLAS_WORKSPACE_CONFIG``. Usable as ``with preserved_global_state():`` or as a decorator
    ``@preserved_global_state()``; nesting is fine.
    """
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    mps_rng = torch.mps.get_rng_state() if torch.backends.mps.is_available() else None
    py_rng = random.getstate()
    np_rng = np.random.get_state()
    cudnn = {f: getattr(torch.backends.cudnn, f) for f in _CUDNN_FLAGS}
    cublas = os.environ.get(_CUBLAS)
    try:
        yield
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        if mps_rng is not None:
            torch.mps.set_rng_state(mps_rng)
        random.setstate(py_rng)
        np.random.set_state(np_rng)
        for f, v in cudnn.items():
            setattr(torch.backends.cudnn, f, v)
        if cublas is None:
            os.environ.pop(_CUBLAS, None)
        else:
            os.environ[_CUBLAS] = cublas
