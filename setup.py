"""Package discovery only; all metadata lives in pyproject.toml.

data/ (embedded data files) is installed as ``molgen.embedded`` (see ``package-dir`` in pyproject.toml).
"""
from setuptools import find_packages, setup

packages = find_packages(include=["molgen", "molgen.*"])
packages += ["molgen.embedded"]
setup(packages=packages)
