"""Wall time of the command line's quickest paths (help, a bad option), on one or two source trees.

Each command runs ``--runs`` times per tree, the trees alternating, as a fresh process with ``PYTHONPATH``
at the tree's ``src`` (the ``tunelab`` entry point of the running interpreter's environment). Prints one JSON
line per command: the median and every run, per tree.

Usage (from the repository root)::

    python bench/cli_startup.py --after . --before /tmp/before   # a checkout of an older commit
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = {
    "tunelab --help": ["--help"],
    "tunelab tune --help": ["tune", "--help"],
    "tunelab tune --no-such-option": ["tune", "--no-such-option"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--after", type=Path, default=Path("."), help="a checkout (its src/ is imported)")
    parser.add_argument("--before", type=Path, default=None)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    trees = {"after": args.after.resolve()}
    if args.before is not None:
        trees = {"before": args.before.resolve(), **trees}
    entry_point = Path(sys.executable).parent / "tunelab"
    for label, command in COMMANDS.items():
        seconds: dict[str, list[float]] = {name: [] for name in trees}
        for _ in range(args.runs):
            for name, tree in trees.items():
                env = {**os.environ, "PYTHONPATH": str(tree / "src")}
                started = time.perf_counter()
                subprocess.run([str(entry_point), *command], env=env, capture_output=True, check=False)
                seconds[name].append(time.perf_counter() - started)
        record = {
            name: {"median_s": round(statistics.median(runs), 3), "runs_s": [round(s, 3) for s in runs]}
            for name, runs in seconds.items()
        }
        print(json.dumps({"command": label, **record}), flush=True)


if __name__ == "__main__":
    main()
