"""A dry run's report: every command a variant's path would run and every tag it would write.

Pure: the lines come from the plan and the decision; nothing is run.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from rocm_release.core.build_commands import StageInputs, planned_commands
from rocm_release.core.decision import PathDecision
from rocm_release.core.plan import ReleasePlan, VariantPlan
from rocm_release.core.task_ids import REUSE_CACHED_IMAGES


def dry_run_lines(plan: ReleasePlan, v: VariantPlan, decision: PathDecision, run_id: str, *,
                  cli: str = "docker") -> list[str]:
    """What the run would do for one variant, command by command, in order."""
    config = plan.config
    inputs = StageInputs(
        context=Path(f"<source of {plan.commit[:12]}>"), base_dockerfile=config.project.base_dockerfile,
        dockerfile=config.project.dockerfile, targets=config.project.targets.model_dump(),
        network=config.build.network, run_id=run_id,
        secrets={s: Path(f"<secret file {s}>") for s in config.build.secrets},
    )
    lines = [f"DRY RUN: {v.name} would run {list(decision.builds) or [REUSE_CACHED_IMAGES]}; nothing runs."]
    for command in planned_commands(plan, v, decision.builds, inputs, decision.base.digest, cli=cli):
        lines.append(f"DRY RUN would run: {shlex.join(command)}")
    for kind, tag in v.cache_tags.model_dump().items():
        lines.append(f"DRY RUN would tag {plan.cache_ref(tag)} (the {kind} image)")
    lines.append(f"DRY RUN would copy to {plan.public_ref(v.public_tags.nightly_commit)} and "
                 f"{plan.public_ref(v.public_tags.base_nightly_commit)}")
    already = " (already published: verify only)" if decision.wheels_published.present else ""
    lines.append(f"DRY RUN would publish wheels to {v.wheels_url}{already}")
    if plan.promote:
        lines.append(f"DRY RUN would promote {plan.public_ref(v.public_tags.nightly)}, "
                     f"{plan.public_ref(v.public_tags.base_nightly)} and {v.nightly_wheels_url} (only forwards)")
    return lines
