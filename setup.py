"""
Packaging shim: setuptools reads the metadata from setup.cfg.

The twistd plugin lives in C{twisted/plugins/}, which has no C{__init__.py};
it must be listed here by hand so that the installed wheel carries it.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["pylon_ai", "pylon_ai.*"]), "twisted.plugins"],
    package_data={"pylon_ai": ["py.typed", "web/*.html"]},
)
