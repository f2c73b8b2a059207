"""Build tinytorch for the ROCm version and GPU archs named in the environment.

The base Dockerfile sets ROCM_VERSION and PYTORCH_ROCM_ARCH (its build args);
they become the wheel's local version label (``2.9.0+rocm7.1.0``) and are
compiled into the extension, the way a real ROCm torch build records them.
Without them the wheel is a CPU build (``2.9.0+cpu``).
"""

import os
import re

from setuptools import Extension, setup

BASE_VERSION = "2.9.0"

rocm_version = os.environ.get("ROCM_VERSION", "")
gpu_archs = os.environ.get("PYTORCH_ROCM_ARCH", "")
if rocm_version and not re.fullmatch(r"[0-9]+\.[0-9]+(\.[0-9]+)?", rocm_version):
    raise SystemExit(f"ROCM_VERSION must look like 7.1.0, got {rocm_version!r}")
if gpu_archs and not re.fullmatch(r"gfx[0-9a-z]+(;gfx[0-9a-z]+)*", gpu_archs):
    raise SystemExit(f"PYTORCH_ROCM_ARCH must be a ';'-separated list of gfx archs, got {gpu_archs!r}")

setup(
    version=f"{BASE_VERSION}+rocm{rocm_version}" if rocm_version else f"{BASE_VERSION}+cpu",
    ext_modules=[
        Extension(
            "tinytorch._C",
            sources=["csrc/C.c"],
            define_macros=[
                ("TINYTORCH_ROCM_VERSION", f'"{rocm_version}"'),
                ("TINYTORCH_GPU_ARCHS", f'"{gpu_archs}"'),
            ],
        )
    ],
)
