"""The contract: every file and message parbench writes or reads, as pydantic models (torch-free).

One module per format, each with its one reader and one writer; the type that writes a file is the
type that reads it.  ``parbench schema --out DIR`` writes their JSON Schemas (see :mod:`.schema`).

- :mod:`.ids`       the name rule for models and variants, the case key and the one test-id parser
- :mod:`.parity`    a parity result (``reports/parity/*.jsonl``, one JSON line per case)
- :mod:`.bench`     a benchmark document (pytest-benchmark JSON) and parbench's ``extra_info``
- :mod:`.device`    runs and results posted by devices (collector API) and kept in the store
- :mod:`.manifest`  a fixture set's ``manifest.json`` (read by Python, C++ and Objective-C++)
- :mod:`.config`    a user model entry (``[models.NAME]`` in a TOML file)
"""
