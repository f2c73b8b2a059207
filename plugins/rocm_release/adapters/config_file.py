"""Reading the release config file: ``$ROCM_NIGHTLY_CONFIG`` or the embedded vLLM config.

The path is absolute or relative to the repository root. The DAG files read it once at parse
time; ``resolve_release`` freezes what later tasks need into the plan, so no task reads it again.
"""

from __future__ import annotations

import os
from pathlib import Path

from rocm_release.core.config import ConfigError, ReleaseConfig, parse_config

CONFIG_ENV = "ROCM_NIGHTLY_CONFIG"
REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_CONFIG = REPO_ROOT / "include" / "config" / "vllm.yaml"


def config_path() -> Path:
    """The config file in use: ``$ROCM_NIGHTLY_CONFIG`` (relative to the repo root) or vllm.yaml."""
    named = os.environ.get(CONFIG_ENV)
    if not named:
        return DEFAULT_CONFIG
    path = Path(named)
    return path if path.is_absolute() else REPO_ROOT / path


def load_config(path: Path | None = None) -> ReleaseConfig:
    """Read and validate the config file (``config_path()`` unless given)."""
    path = path or config_path()
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the release config ({exc.strerror}); set {CONFIG_ENV}") from exc
    return parse_config(text, str(path), repo_root=str(REPO_ROOT))
