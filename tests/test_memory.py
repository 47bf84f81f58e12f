"""dreamenv.memory: freed memory stays in the process (fewer page faults per allocation)."""

from __future__ import annotations

import subprocess
import sys

import pytest

ALLOCATE_AND_COUNT_FAULTS = """
import resource, sys, torch
from dreamenv.memory import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
torch.empty(16 << 20).fill_(1.0)
before = faults()
for _ in range(20):
    torch.empty(16 << 20).fill_(1.0)  # 64 MiB: above glibc's largest mmap threshold
print(faults() - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", ALLOCATE_AND_COUNT_FAULTS, mode],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc only")
def test_keep_freed_memory_stops_page_faults_of_repeated_large_allocations():
    default, kept = _faults("default"), _faults("keep")
    # default: every 64 MiB block is mapped afresh (16384 faults each); kept: reused
    assert default > 20 * 16384 * 0.5
    assert kept < default / 5


def test_keep_freed_memory_reports_whether_it_applied(monkeypatch):
    from dreamenv import memory

    monkeypatch.setattr(memory.sys, "platform", "darwin")
    assert memory.keep_freed_memory() is False
