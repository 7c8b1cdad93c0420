"""`python -m parbench.cli` (the same as `parbench`)."""

from parbench.cli import main

main()
