"""flush_denormals: products below the smallest normal float become zero, on every torch thread."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_flush_denormals_before_torch_work_reaches_every_thread():
    # In a fresh process (the mode is per thread, and torch's worker threads inherit the one they are created
    # with): 1e-20 * 1e-20 = 1e-40 is denormal, so it is kept without the flush and zero with it.
    script = textwrap.dedent(
        """
        import sys
        import torch
        from tunelab.train import flush_denormals

        torch.set_num_threads(2)
        if sys.argv[1] == "flush":
            assert flush_denormals()
        a = torch.full((4_000_000,), 1e-20)
        products = a * a
        grid = torch.full((256, 256), 1e-20) @ torch.full((256, 256), 1e-20)
        print(int((products != 0).sum()), int((grid != 0).sum()))
        """
    )
    counts = {}
    for mode in ("flush", "keep"):
        done = subprocess.run(
            [sys.executable, "-c", script, mode], capture_output=True, text=True, check=True, timeout=120
        )
        counts[mode] = [int(n) for n in done.stdout.split()]
    assert counts["flush"] == [0, 0]
    assert counts["keep"][0] == 4_000_000
