"""The two suites, shipped in the package so any repository runs them on its own models with no
files copied: ``pytest --pyargs parbench.suites.parity`` and ``pytest --pyargs parbench.suites.latency``
(this repository's ``parity/`` and ``bench/`` hold the same tests)."""
