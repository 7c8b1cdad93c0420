"""`python -m parbench ...`: the same commands as the `parbench` script."""

from parbench.cli import main

if __name__ == "__main__":
    main()
