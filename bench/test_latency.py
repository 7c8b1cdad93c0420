"""This repository's latency suite: the one parbench ships (:mod:`parbench.suites.latency`)."""

from parbench.suites.latency import test_latency  # noqa: F401
