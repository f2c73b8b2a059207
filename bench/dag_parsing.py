#!/usr/bin/env python3
"""Benchmark 5 — DAG file parsing: what the dag-processor pays for ``rocm_nightly_release`` on every parse.

The dag-processor parses each DAG file in a fresh child process (Airflow itself
already imported), with a ``DagBag`` of that one file, then serializes its DAGs.
This benchmark does the same, timed, in a new subprocess per repetition
(median of ``--repeat``): Airflow and ``DagBag`` are imported first (not timed),
then ``DagBag(<file>)`` (imports, config load, DAG construction) and
``DagSerialization.to_dict`` are timed.

Files: ``dags/rocm_nightly_release.py`` with 1 and with 12 variants configured
(generated configs), next to two trivial DAGs written into a temporary dags
folder — one with the same imports and a single task, one importing only
``airflow.sdk`` — which show what the imports alone cost.

    .venv/bin/python bench/dag_parsing.py [--repeat 7] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from local_services import REPO
from report import Ratio, Result, fmt_seconds, main, median, progress, ratio

from tests.support.demo import demo_document

PARSE = r"""
import json, sys, time
from airflow.dag_processing.dagbag import DagBag
from airflow.serialization.serialized_objects import DagSerialization
import airflow.sdk  # noqa: F401 - preloaded, as in the dag-processor's parent
started = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1], load_op_links=False)
parsed = time.perf_counter()
for dag in bag.dags.values():
    DagSerialization.to_dict(dag)
done = time.perf_counter()
print(json.dumps({"parse": parsed - started, "serialize": done - parsed, "errors": bag.import_errors,
                  "dags": sorted(bag.dag_ids), "tasks": sum(len(d.tasks) for d in bag.dags.values())}))
"""

SAME_IMPORTS = '''"""A trivial DAG with the imports of rocm_nightly_release.py and one task (benchmark baseline)."""
from __future__ import annotations

from datetime import timedelta  # noqa: F401

import pendulum
from airflow.sdk import DAG, TaskGroup, TriggerRule  # noqa: F401

from rocm_release.adapters.config_file import load_config  # noqa: F401
from rocm_release.core import task_ids as ids  # noqa: F401
from rocm_release.tasks.params import release_params, variant_assets  # noqa: F401
from rocm_release.tasks.nightly import (  # noqa: F401
    BuildImageOperator,
    ChoosePathOperator,
    PromoteNightlyOperator,
    PublishWheelsOperator,
    PushImagesOperator,
    ReleaseSummaryOperator,
    ResolveReleaseOperator,
    ReuseCachedImagesOperator,
)
from rocm_release.tasks.sensors import ArtifactSensor  # noqa: F401

with DAG(dag_id="trivial_same_imports", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
    ResolveReleaseOperator(task_id="resolve_release", config=load_config())
'''

SDK_ONLY = '''"""A trivial DAG importing only airflow.sdk (benchmark baseline)."""
from __future__ import annotations

import pendulum
from airflow.sdk import DAG, BaseOperator

with DAG(dag_id="trivial_sdk_only", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
    BaseOperator(task_id="nothing")
'''


def variants_config(base: dict, count: int) -> dict:
    """The demo config with ``count`` variants (rocm710 and made-up siblings with other ROCm versions)."""
    config = copy.deepcopy(base)
    template = next(v for v in base["variants"] if v["name"] == "rocm710")
    config["variants"] = []
    for i in range(count):
        variant = dict(template)
        if i:
            variant["name"] = f"rocm7{i:02d}x"
            variant["rocm_version"] = f"7.{i // 10}.{i % 10}"
        config["variants"].append(variant)
    return config


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repeat", type=int, default=7, help="subprocesses per file (median)")


def run(args: argparse.Namespace, result: Result) -> None:
    demo = demo_document()
    measured: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="rocm-nightly-bench-parse-") as tmp:
        root = Path(tmp)
        (root / "dags").mkdir()
        (root / "dags" / "trivial_same_imports.py").write_text(SAME_IMPORTS)
        (root / "dags" / "trivial_sdk_only.py").write_text(SDK_ONLY)
        one, twelve = root / "one.yaml", root / "twelve.yaml"
        one.write_text(yaml.safe_dump(variants_config(demo, 1)))
        twelve.write_text(yaml.safe_dump(variants_config(demo, 12)))
        env = {**os.environ, "AIRFLOW_HOME": str(root / "airflow"),
               "AIRFLOW__CORE__DAGS_FOLDER": str(root / "dags"),
               "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
               "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
        cases = [
            ("trivial DAG, `airflow.sdk` only", root / "dags" / "trivial_sdk_only.py", one),
            ("trivial DAG, same imports as ours, 1 task", root / "dags" / "trivial_same_imports.py", one),
            ("`rocm_nightly_release`, 1 variant", REPO / "dags" / "rocm_nightly_release.py", one),
            ("`rocm_nightly_release`, 12 variants", REPO / "dags" / "rocm_nightly_release.py", twelve),
        ]
        # Interleaved repetitions, so that a burst of other work on the machine hits every case alike.
        for rep in range(args.repeat):
            progress(f"parsing, round {rep + 1} of {args.repeat}")
            for name, path, config in cases:
                proc = subprocess.run([sys.executable, "-c", PARSE, str(path)], capture_output=True, text=True,
                                      env={**env, "ROCM_NIGHTLY_CONFIG": str(config)}, check=False)
                if proc.returncode != 0:
                    raise RuntimeError(f"parsing {path} failed:\n{proc.stderr[-4000:]}")
                answer = json.loads(proc.stdout.strip().splitlines()[-1])
                if answer["errors"] or not answer["dags"]:
                    raise RuntimeError(f"{path}: import errors {answer['errors']}, dags {answer['dags']}")
                entry = measured.setdefault(name, {"parse": [], "serialize": [], "tasks": answer["tasks"]})
                entry["parse"].append(answer["parse"])
                entry["serialize"].append(answer["serialize"])

    result.what = (
        "Parse time of one DAG file as the dag-processor does it: a fresh subprocess (Airflow already "
        "imported), `DagBag(<file>)` then `DagSerialization.to_dict` of its DAGs; median of "
        f"{args.repeat} interleaved rounds."
    )
    result.columns = ["DAG file", "tasks", "parse (median)", "serialize (median)", "total (median)"]
    totals = {}
    for name, entry in measured.items():
        p, s = median(entry["parse"]), median(entry["serialize"])
        totals[name] = median([a + b for a, b in zip(entry["parse"], entry["serialize"], strict=True)])
        result.rows.append([name, str(entry["tasks"]), fmt_seconds(p), fmt_seconds(s), fmt_seconds(totals[name])])
    names = list(measured)
    sdk, same, one_v, twelve_v = (totals[n] for n in names)
    per_variant = (twelve_v - one_v) / 11
    result.ratios = [
        Ratio("12 variants ÷ 1 variant", ratio(twelve_v, one_v)),
        Ratio("ours (1 variant) ÷ trivial DAG with the same imports", ratio(one_v, same)),
        Ratio("trivial DAG with our imports ÷ trivial `airflow.sdk` DAG", ratio(same, sdk)),
    ]
    result.notes += [
        f"Each added variant costs about {fmt_seconds(per_variant)} of parse + serialize "
        f"({measured[names[3]]['tasks'] - measured[names[2]]['tasks']} more tasks for 11 more variants).",
        f"Importing the package (the operators, the config model) costs about {fmt_seconds(same - sdk)} over an "
        "`airflow.sdk`-only file; that is paid on every parse, by any DAG file that imports it.",
        "Airflow's default `dag_file_processor_timeout` is 50 s and `min_file_process_interval` 30 s: even "
        "12 variants stay far below.",
    ]
    result.raw = {name: entry for name, entry in measured.items()}


if __name__ == "__main__":
    sys.exit(main("dag_parsing", "5. DAG file parsing", run, configure))
