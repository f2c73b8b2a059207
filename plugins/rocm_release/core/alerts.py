"""What a night's alert says, pure: which runs alert, the failed tasks with their log links, the commit, and
the line of the DAG's triage note ("Where to look when it fails") that names each failed task.

``notify_outcome`` (tasks.alerts) gathers the facts; this module decides and writes the message. A dry run
never alerts; a failed night alerts every time; a good night alerts once, "recovered", after a failed one.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from typing import Literal

AlertKind = Literal["failed", "recovered"]
FAILED_STATES = frozenset({"failed"})
# A task that did not run because one before it failed: named, but not as a cause.
CONSEQUENCE_STATES = frozenset({"upstream_failed"})
TRIAGE_HEADING = "**Where to look when it fails.**"


def alert_kind(*, night_failed: bool, previous: str | None) -> AlertKind | None:
    """``failed`` for a failed night; ``recovered`` for the first good night after a failed one; else None."""
    if night_failed:
        return "failed"
    return "recovered" if previous == "failed" else None


def failed_tasks(states: Mapping[str, str | None], *, ignore: str = "", consequence: str = "") -> list[str]:
    """The task ids that failed (not those that only did not run because of them), in id order.

    ``consequence`` (the release summary) is left out when something else failed: it fails *because* a
    variant has no digests or wheels, and naming it would send the reader to the wrong log."""
    failed = sorted(t for t, s in states.items() if s in FAILED_STATES and t != ignore)
    causes = [t for t in failed if t != consequence]
    return causes or failed


def triage_lines(doc_md: str) -> list[str]:
    """The bullets of the doc's triage section, each joined onto one line."""
    if TRIAGE_HEADING not in doc_md:
        return []
    section = doc_md.split(TRIAGE_HEADING, 1)[1].split("\n\n**", 1)[0]
    bullets = re.split(r"\n- ", "\n" + section.strip())
    return [" ".join(b.split()) for b in bullets if b.strip()]


def triage_for(task_id: str, doc_md: str) -> str:
    """The triage line that names the task (``task`` in backticks, or a ``check_*`` sensor); "" if none."""
    name = task_id.rsplit(".", 1)[-1]
    for line in triage_lines(doc_md):
        if f"`{name}`" in line or (name.startswith("check_") and "`check_*`" in line):
            return line.removeprefix("- ")
    return ""


def compose(kind: AlertKind, *, dag_id: str, run_id: str, commit: str | None, failed: Sequence[str],
            log_urls: Mapping[str, str], doc_md: str, run_url: str) -> tuple[str, str]:
    """Subject and HTML body of the alert."""
    short = commit[:12] if commit else "unresolved"
    if kind == "recovered":
        subject = f"[rocm-nightly] RECOVERED: {dag_id} {run_id} (commit {short})"
        body = [f"<p>{html.escape(dag_id)} run <a href=\"{html.escape(run_url)}\">{html.escape(run_id)}</a> "
                f"succeeded after a failed night.</p>",
                f"<p>Commit: <code>{html.escape(commit or 'unresolved')}</code></p>"]
        return subject, "\n".join(body)
    subject = f"[rocm-nightly] FAILED: {dag_id} {run_id}: {', '.join(failed) or 'a task'} (commit {short})"
    body = [f"<p>{html.escape(dag_id)} run <a href=\"{html.escape(run_url)}\">{html.escape(run_id)}</a> failed.</p>",
            f"<p>Commit: <code>{html.escape(commit or 'unresolved (resolve_release did not finish)')}</code></p>",
            "<ul>"]
    for task in failed:
        line = triage_for(task, doc_md)
        body.append(f"<li><a href=\"{html.escape(log_urls.get(task, run_url))}\">{html.escape(task)}</a> failed"
                    + (f"<br>Triage: {html.escape(line)}" if line else "") + "</li>")
    body.append("</ul>")
    return subject, "\n".join(body)
