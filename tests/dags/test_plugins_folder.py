"""Airflow's plugin loader must not exec our package's files as top-level modules.

It imports every ``.py`` under the plugins folder by file stem: without
``plugins/.airflowignore``, ``registry/copy.py`` became ``sys.modules["copy"]``
and broke ``fastapi`` inside ``airflow dags test``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import REPO

PROBE = r"""
import json, sys
from airflow import plugins_manager
plugins_manager._get_plugins()
ours = sorted(name for name, mod in list(sys.modules.items())
              if "/plugins/rocm_release/" in str(getattr(mod, "__file__", "") or "")
              and not name.startswith("rocm_release"))
import copy
print(json.dumps({"shadowing": ours, "copy_is_stdlib": hasattr(copy, "deepcopy")}))
"""


def test_plugin_loader_leaves_the_package_alone() -> None:
    env = {**os.environ, "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins")}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"shadowing": [], "copy_is_stdlib": True}
