"""tinytorch: a tiny stand-in for the ROCm build of torch."""

from importlib.metadata import version as _dist_version

from tinytorch._C import build_info, dot

__all__ = ["__version__", "build_info", "dot", "version"]

__version__ = _dist_version("tinytorch")


class version:  # noqa: N801 - mirrors torch.version
    """Build facts, named like ``torch.version``: ``hip`` is the ROCm version (None for CPU builds)."""

    hip: str | None = build_info()["rocm_version"] or None
    gpu_archs: tuple[str, ...] = tuple(a for a in build_info()["gpu_archs"].split(";") if a)
