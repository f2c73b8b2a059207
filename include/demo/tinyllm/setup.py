"""The compiled part of tinyllm; everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("tinyllm._ops", sources=["csrc/ops.c"])])
