"""Keep freed memory in the process, so that large per-step tensors stop costing page faults.

glibc's ``malloc`` serves every block above its mmap threshold (at most 32 MiB) with a
fresh ``mmap`` and returns it with ``munmap`` when freed. A rollout that allocates the same
large activations every step (a pixel model at batch 256: 38 MiB per 1/4-resolution map)
then maps, zero-fills and unmaps them every step. Measured on the 2-core benchmark
machine (``paper`` sizes, 96x96 frames, batch 256, one thread): the AR baseline imagined 480
real steps/s with glibc's defaults and 729 with freed memory kept (a 13-step run took 2.6
million minor page faults), while the state-space models, whose largest maps are 16 times
smaller, changed by 2-3%. Training meets the same: the quick preset's world-model fit
(batches of 32 x 16 stacks of 64x64 frames) ran 40 updates in 12.3 s instead of 19.3 s.
Benchmarks that compare such models call :func:`keep_freed_memory` first, so that they
measure the models, not the allocator.

It is process-wide and one-way (memory the process freed is reused, not returned to the
OS: the resident size stays near its peak), so importing dreamenv never calls it; the
``dreamenv`` command line does (``dreamenv --release-memory ...`` keeps glibc's default).

Example:
    >>> from dreamenv.memory import keep_freed_memory
    >>> keep_freed_memory()  # doctest: +SKIP
    True
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1
"""glibc ``mallopt`` parameter: free heap top above this many bytes is returned to the OS."""
M_MMAP_MAX = -4
"""glibc ``mallopt`` parameter: how many blocks may be served by ``mmap`` at once."""
_NEVER_TRIM = 2**31 - 1
"""The largest ``int`` ``mallopt`` takes: effectively never trim the heap."""


def keep_freed_memory() -> bool:
    """Have glibc's ``malloc`` serve every block from its heap and keep freed memory there.

    Sets ``M_MMAP_MAX = 0`` (no block is ``mmap``-ed, so none is ``munmap``-ed on free) and
    a trim threshold of 2 GiB (the heap top is not handed back either). Blocks already
    mapped are unaffected.

    Returns:
        ``True`` if both settings took effect; ``False`` where the C library is not glibc
        (macOS, Windows, musl), where nothing is changed.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, _NEVER_TRIM))
