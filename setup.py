"""Package discovery only; all metadata lives in pyproject.toml.

configs/ and pipelines/ sit at the top of the repository (one place to read them) but are installed
as ``molgen.configs`` and ``molgen.pipelines`` so a non-editable install carries them.
"""
from setuptools import find_packages, setup

packages = find_packages(include=["molgen", "molgen.*"])
packages += ["molgen.pipelines", "molgen.configs", "molgen.embedded"]
setup(packages=packages)
