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


def test_training_flushes_denormals_while_it_runs_and_warns_when_torch_threads_started_before():
    # Each case in a fresh process. "fresh": Trainer.fit is the first torch work, so it sets the mode before
    # torch's threads exist and they inherit it. "late": parallel torch work came first, so half of the
    # threads keep the old mode, and fit says so (a PerformanceWarning naming the fix). Either way the
    # caller's thread gets its own mode back when fit returns (Python's floats show it).
    script = textwrap.dedent(
        """
        import sys, warnings
        import torch
        from tunelab.train import Callback, Trainer, TrainSpec

        class Count(Callback):
            def on_train_begin(self, logs):
                tiny = torch.full((1 << 20,), 1e-20)
                self.kept = int(torch.count_nonzero(tiny * tiny))

        torch.set_num_threads(2)
        if sys.argv[1] == "late":
            (torch.ones(1 << 20) * 2).sum()
        x, y = torch.rand(64, 4), torch.randint(0, 2, (64,))
        count = Count()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            Trainer(torch.nn.Linear(4, 2), TrainSpec(epochs=1), task="classification", callbacks=[count]).fit(
                (x, y)
            )
        smallest, half = sys.float_info.min, 0.5
        print(count.kept, smallest * half > 0.0)
        print("|".join(f"{type(w.message).__name__}: {w.message}" for w in caught))
        """
    )
    seen = {}
    for case in ("fresh", "late"):
        done = subprocess.run(
            [sys.executable, "-c", script, case], capture_output=True, text=True, check=True, timeout=120
        )
        counts, warned = done.stdout.splitlines()
        kept, restored = counts.split()
        seen[case] = (int(kept), restored, warned)
    assert seen["fresh"] == (0, "True", "")
    kept, restored, warned = seen["late"]
    assert kept > 0
    assert restored == "True"
    assert warned.startswith("PerformanceWarning: ")
    assert "tunelab.train.flush_denormals()" in warned
