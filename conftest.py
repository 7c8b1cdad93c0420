# Root conftest: load parbench's pytest plugin (options --models --variants --sizes --tier
# --parbench-config, case parametrization, result recording) for parity/, bench/ and tests/.
pytest_plugins = ["parbench.pytest_plugin"]
