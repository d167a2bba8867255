"""`python -m tunelab.cli`: the `tunelab` command."""

from tunelab.cli import main

main()
