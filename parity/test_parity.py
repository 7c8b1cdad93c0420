"""This repository's parity suite: the one parbench ships (:mod:`parbench.suites.parity`)."""

from parbench.suites.parity import test_parity  # noqa: F401
