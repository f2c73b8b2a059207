"""tinyllm: a tiny stand-in for vLLM, built on tinytorch (the stand-in for ROCm torch)."""

from pathlib import Path

import tinytorch

from tinyllm._ops import rms_norm
from tinyllm._version import __version__

__all__ = ["__version__", "info", "rms_norm", "score"]

ROCM_INFO = Path("/opt/rocm/.info/version")


def score(a: list[float], b: list[float]) -> float:
    """Similarity of two vectors: the dot product of their RMS-normalised forms."""
    return tinytorch.dot(rms_norm(a), rms_norm(b))


def info() -> str:
    """One line naming this build: tinyllm, tinytorch and the ROCm it was built for."""
    rocm = ROCM_INFO.read_text().strip() if ROCM_INFO.exists() else "none"
    archs = ";".join(tinytorch.version.gpu_archs) or "none"
    return (
        f"tinyllm {__version__} (tinytorch {tinytorch.__version__}, ROCm {rocm}, archs {archs}); "
        f"score check {score([1.0, 2.0], [1.0, 2.0]):.3f}"
    )
