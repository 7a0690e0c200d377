"""The allocator policy of server processes (vna/memory.py): freed large blocks are reused
instead of being handed back to the kernel and faulted in again."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap

import pytest

WORKLOAD = textwrap.dedent(
    """
    import resource, sys
    from vna.memory import keep_freed_memory
    if sys.argv[1] == "tuned":
        assert keep_freed_memory()

    def rounds(n):
        # what a busy server does: several 1 MiB pieces in flight, then all freed
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(n):
            blocks = [bytearray(1 << 20) for _ in range(6)]
            for block in blocks:
                block[::4096] = b"\\x01" * len(block[::4096])
            del blocks
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    rounds(2)  # the heap grows to its working size
    print(rounds(50))
    """
)


def _faults(mode: str) -> int:
    result = subprocess.run(
        [sys.executable, "-c", WORKLOAD, mode], capture_output=True, text=True, check=True
    )
    return int(result.stdout.strip())


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="a glibc setting")
def test_large_blocks_are_reused_without_page_faults() -> None:
    untuned, tuned = _faults("untuned"), _faults("tuned")
    assert tuned < 100, tuned
    assert untuned > 5 * max(tuned, 100), (untuned, tuned)
