"""The release report: one per run, a JSON document and its Markdown rendering.

Built from what the tasks handed on through XCom (``VariantResults``); ``adapters.steps``
adds the image sizes, stores both at ``<store>/<commit>/RELEASE.md`` / ``RELEASE.json``, and
the task prints the Markdown.
"""

from __future__ import annotations

import json
from typing import Any

from rocm_release.core.decision import PathDecision
from rocm_release.core.frozen import Frozen
from rocm_release.core.plan import ReleasePlan, VariantPlan

OUTCOME_PUBLISHED = "published"
OUTCOME_DRY_RUN = "dry run (nothing published)"
OUTCOME_FAILED = "FAILED"


class VariantResults(Frozen):
    """What one variant's tasks handed on (None where a task did not run or failed).

    ``promotion`` is there also when promote_nightly skipped itself (it hands on why before skipping)."""

    decision: PathDecision | None = None
    pushed: dict[str, Any] | None = None
    wheels: list[dict[str, Any]] | None = None
    promotion: dict[str, Any] | None = None
    # test_release_image, test_wheels: core.smoke.gate_result (passed, why, the failed container's last lines)
    gate: tuple[dict[str, Any], ...] = ()
    durations: dict[str, float] = {}

    def complete(self, plan: ReleasePlan) -> bool:
        """Images pushed and wheels published (or a dry run, which publishes nothing)."""
        return plan.dry_run or (self.pushed is not None and self.wheels is not None)

    def digests(self) -> dict[str, str]:
        """kind → digest of what push_images published."""
        return dict((self.pushed or {}).get("digests", {}))


def changed_nothing(plan: ReleasePlan, results: dict[str, VariantResults]) -> bool:
    """True for a night that built nothing, uploaded no wheel and moved no alias: its report only repeats
    what the night that published the commit stored (``release_summary`` keeps that one)."""
    return all(
        (r := results[v.name]).decision is not None and r.decision.reuse
        and not any(w.get("uploaded") for w in r.wheels or [])
        and not (r.promotion or {}).get("promoted")
        for v in plan.variants
    )


def _path(decision: PathDecision | None) -> str:
    if decision is None:
        return "no decision (failed early)"
    return "reused: no build" if decision.reuse else f"built: {', '.join(decision.builds)}"


def variant_entry(plan: ReleasePlan, v: VariantPlan, results: VariantResults,
                  sizes: dict[str, int]) -> dict[str, Any]:
    """One variant's part of the report: path and why, digests, sizes, wheels, promotion, commands."""
    index = public_index_url(plan.config.wheel_store.public_url, plan.store_url, v.wheels_url)
    entry: dict[str, Any] = {
        "path": _path(results.decision),
        "reasons": list(results.decision.reasons) if results.decision else [],
        "digests": results.digests(),
        "public": (results.pushed or {}).get("public", {}),
        "wheels": results.wheels or [],
        "promotion": results.promotion,
        "gate": list(results.gate),
        "durations": results.durations,
        "index_url": index,
        "commands": install_commands(plan, v, index, plan.project, results.digests().get("release")),
    }
    if sizes:
        entry["sizes"] = sizes
    return entry


def build_report(plan: ReleasePlan, results: dict[str, VariantResults], sizes: dict[str, dict[str, int]], *,
                 run_id: str, generated: str) -> dict[str, Any]:
    """The whole report. ``outcome`` is published only when every variant pushed and published."""
    complete = all(results[v.name].complete(plan) for v in plan.variants)
    outcome = OUTCOME_DRY_RUN if plan.dry_run else OUTCOME_PUBLISHED if complete else OUTCOME_FAILED
    return {
        "project": plan.project, "commit": plan.commit,
        "commit_time": plan.commit_time.isoformat() if plan.commit_time else None,
        "run_kind": plan.run_kind, "run_id": run_id, "as_of": plan.as_of.isoformat(),
        "dry_run": plan.dry_run, "skip_tests": plan.skip_tests, "outcome": outcome, "generated": generated,
        "variants": {v.name: variant_entry(plan, v, results[v.name], sizes.get(v.name, {})) for v in plan.variants},
    }


def install_commands(plan: ReleasePlan, v: VariantPlan, index_url: str, project: str,
                     release_digest: str | None) -> dict[str, str]:
    """The exact commands a user runs: pip, uv, and a digest-pinned docker pull."""
    commands = {
        "pip": f"pip install {project} --extra-index-url {index_url}",
        "pip_strict": f"pip install {project} --index-url {index_url}",
        "uv": f"uv pip install {project} --extra-index-url {index_url} --index-strategy unsafe-best-match",
    }
    if release_digest:
        commands["docker"] = f"docker pull {plan.public_ref(release_digest)}"
    return commands


def public_index_url(public_base: str | None, store_url: str, folder_url: str) -> str:
    """The URL users install from: the store's public URL when configured, else the store URL itself."""
    if not public_base:
        return folder_url
    return public_base.rstrip("/") + "/" + folder_url[len(store_url.rstrip("/")) + 1:]


def render_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown, for the task log, the store and a release note."""
    lines = [
        f"# {report['project']} ROCm release — {report['commit'][:12]}",
        "",
        f"- commit: `{report['commit']}` ({report.get('commit_time') or 'time unknown'})",
        f"- run: {report['run_kind']} (`{report['run_id']}`), as of {report['as_of']}"
        + (" — **dry run**" if report["dry_run"] else ""),
        f"- outcome: **{report['outcome']}**",
        "",
    ]
    if report.get("skip_tests"):
        lines[-1:] = ["- **the smoke tests were SKIPPED (skip_tests): published untested**", ""]
    for name, var in report["variants"].items():
        lines += [f"## {name}", "", f"- path: **{var['path']}**"]
        lines += [f"  - {reason}" for reason in var.get("reasons", [])]
        if var.get("digests"):
            lines += ["", "| image | digest | size |", "|---|---|---|"]
            for kind, digest in var["digests"].items():
                size = var.get("sizes", {}).get(kind)
                lines.append(f"| {kind} | `{digest}` | {_size(size)} |")
        if var.get("wheels"):
            lines += ["", "| wheel | sha256 | size |", "|---|---|---|"]
            for wheel in var["wheels"]:
                lines.append(f"| `{wheel['filename']}` | `{wheel['sha256']}` | {_size(wheel['size'])} |")
        lines += _gate_lines(var.get("gate", []))
        if var.get("promotion"):
            moved = "promoted" if var["promotion"].get("promoted") else "not promoted"
            lines += ["", f"- nightly: {moved}: {var['promotion'].get('why', '')}"]
        if var.get("commands"):
            lines += ["", "```sh", *var["commands"].values(), "```"]
        if var.get("durations"):
            lines += ["", "| task | seconds |", "|---|---|"]
            lines += [f"| {task} | {secs:.1f} |" for task, secs in var["durations"].items()]
        lines.append("")
    return "\n".join(lines)


NOTE_MAX = 1000  # Airflow's dag_run_note.content is a String(1000)


def run_note(report: dict[str, Any], full_report_url: str | None) -> str:
    """The night in a few lines for the DAG run's note in the UI: outcome, commit, per variant the path, the
    gate and ``nightly``; a link to the whole report. At most NOTE_MAX characters."""
    lines = [f"**{report['outcome']}**: {report['project']} `{report['commit'][:12]}` ({report['run_kind']} run)"]
    if report.get("skip_tests"):
        lines.append("**the smoke tests were SKIPPED (skip_tests)**")
    for name, var in report["variants"].items():
        parts = [f"- {name}: {var['path']}"]
        gate = [f"{t['task'].rsplit('.', 1)[-1]} "
                f"{'skipped' if not t.get('ran', True) else 'passed' if t.get('passed') else 'FAILED'}"
                for t in var.get("gate", [])]
        if gate:
            parts.append(f"gate: {', '.join(gate)}")
        if var.get("promotion"):
            parts.append("nightly: " + ("promoted" if var["promotion"].get("promoted") else "not promoted"))
        lines.append("; ".join(parts))
    if full_report_url and report["outcome"] != OUTCOME_DRY_RUN:
        lines.append(f"Full report: {full_report_url}")
    text = "\n".join(lines)
    return text if len(text) <= NOTE_MAX else text[:NOTE_MAX - 1] + "…"


def _gate_lines(gate: list[dict[str, Any]]) -> list[str]:
    """Each smoke test's verdict; a failed one with the last lines of its container's output."""
    lines: list[str] = []
    for test in gate:
        verdict = "skipped" if not test.get("ran", True) else "passed" if test.get("passed") else "**FAILED**"
        lines += ["", f"- {test['task']}: {verdict}: {test.get('why', '')}"]
        if test.get("tail"):
            lines += ["", "```text", *test["tail"], "```"]
    return lines


def _size(size: int | None) -> str:
    if size is None:
        return "—"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def to_json(report: dict[str, Any]) -> str:
    """The JSON twin, stable key order."""
    return json.dumps(report, indent=2, sort_keys=True) + "\n"
