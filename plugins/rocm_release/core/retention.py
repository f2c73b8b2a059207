"""Retention: which per-commit tags, bases and wheel folders to keep, and deleting the rest.

The rules (REFERENCE_PIPELINE.md §1 "Retention", §2.6, §2.11), each explained in the plan:

* **Exact patterns, never prefixes.** A tag is ours only when it matches one of the exact
  regexes of ``plan.py`` for a configured variant (``cache_tag_regexes``, ``tag_regex``).
  ``nightly-<sha>-rocm7100`` is not a ``rocm710`` tag. A tag that matches no pattern (another
  variant, a hand-pushed tag) is never touched: it is reported as "unknown, kept". A tag that
  matches two patterns is ambiguous and kept too.
* **The newest N commits by push time, never by name.** A commit's time is the newest push time
  among its per-commit tags (cache ``<commit>-<variant>[-wheels]``, public
  ``[base-]nightly-<commit>-<variant>``) in every repository; a commit known only from its wheel
  folder takes the folder's newest file time. Commits tied on push time at the boundary are all
  kept: a tie is never broken by name. A commit with no time at all cannot be ordered and is kept.
  A kept commit keeps everything: its tags in both registries and ``<store>/<commit>/``.
* **Never what a nightly alias points to.** ``nightly-<variant>`` and ``base-nightly-<variant>``
  themselves are never deleted; the commit whose release image ``nightly-<variant>`` points to (by
  digest), and the commit that ``<store>/nightly/<variant>/`` names, are kept whatever their age;
  the base whose digest ``base-nightly-<variant>`` points to is kept. ``<store>/nightly/`` is never
  deleted.
* **Never a base in use.** A base unit (``<key>-<variant>-base`` and ``-base-wheels``, by key) is
  kept when a kept wheels or release image was built on it — read from that image's labels
  (``dev.rocm-nightly.base-key``/``base-digest``), once per distinct digest, for kept commits only —
  and the newest base of each variant is kept (the next night may reuse it even if no image was
  built on it yet). A kept image without those labels keeps every base of its variant.
* **Never what a nightly run in progress uses, nor anything pushed recently.** A queued or running
  ``rocm_nightly_release`` run keeps the commit its plan names, the bases its plan names and the
  digests its tasks handed on ("in use by run <run_id>"); a run without a plan yet will release the
  branch tip, which the newest commits and the recent window keep: anything pushed within
  ``retention.protect_recent_hours`` of the run is kept (a commit follows its newest push).
* **Registries that delete by digest** (the OCI Distribution API) delete every tag on a digest, so
  a tag that shares its digest with a kept tag is kept there (and the reason says so); ECR and the
  Docker Hub API delete tags, so there an old per-commit tag goes even when its image stays.
* **Untagged images** (ECR) go when they are images, no index lists them, no run uses them and they
  are older than the recent window (:mod:`rocm_release.core.retention_untagged`).

``plan_retention`` is pure: it takes what was listed and returns a :class:`RetentionPlan` with one
:class:`RetentionDecision` per tag and folder. Listing, reading labels and deleting are
:mod:`rocm_release.adapters.retention`'s.
"""


from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from rocm_release.core.names import SHA_RE
from rocm_release.core.plan import BASE_FOLDER
from rocm_release.core.retention_bases import BaseUnit, Verdict, base_verdicts
from rocm_release.core.retention_model import (
    ALIAS_KINDS,
    BASE_KINDS,
    BUILT_KINDS,
    NIGHTLY_FOLDER,
    PER_COMMIT_KINDS,
    BaseUse,
    CommitRank,
    DecisionKind,
    ImageToInspect,
    Repository,
    RepositoryTags,
    RetentionDecision,
    RetentionInputs,
    RetentionPlan,
    Role,
    RunInUse,
    TagKind,
    WheelFolder,
)
from rocm_release.core.retention_ranking import ListedTag, analyse
from rocm_release.core.retention_untagged import untagged_decisions

__all__ = [
    "ALIAS_KINDS",
    "BASE_KINDS",
    "BUILT_KINDS",
    "NIGHTLY_FOLDER",
    "PER_COMMIT_KINDS",
    "BaseUse",
    "CommitRank",
    "DecisionKind",
    "ImageToInspect",
    "Repository",
    "RepositoryTags",
    "RetentionDecision",
    "RetentionInputs",
    "RetentionPlan",
    "Role",
    "RunInUse",
    "TagKind",
    "WheelFolder",
    "commits_without_push_time",
    "images_to_inspect",
    "plan_retention",
]


def commits_without_push_time(inputs: RetentionInputs) -> set[str]:
    """Commits that no tag dates: ``observe_retention`` reads the file times of their wheel folders."""
    analysis = analyse(inputs)
    return {c for c, r in analysis.ranks.items() if r.pushed_at is None}


def images_to_inspect(inputs: RetentionInputs) -> list[ImageToInspect]:
    """The kept commits' wheels and release images in the cache repository, one per distinct digest."""
    seen: set[tuple[str, str]] = set()
    found: list[ImageToInspect] = []
    for t in analyse(inputs).kept_built_images():
        assert t.variant is not None and t.commit is not None
        if (t.repo.location, t.info.digest) in seen:
            continue
        seen.add((t.repo.location, t.info.digest))
        found.append(ImageToInspect(t.repo.location, t.repo.repository, t.name, t.info.digest, t.variant, t.commit))
    return found


def plan_retention(inputs: RetentionInputs, base_use: Mapping[str, BaseUse | None]) -> RetentionPlan:
    """Decide every tag and wheel folder. ``base_use``: digest → labels of each ``images_to_inspect`` image
    (None when they name no base)."""
    analysis = analyse(inputs)
    kept = analysis.kept_commits
    ranks = analysis.ranks
    bases = base_verdicts(analysis, base_use)
    decisions = [_tag_decision(t, kept, ranks, bases) for t in analysis.tags]
    store = inputs.store_url.rstrip("/")
    decisions += [_folder_decision(folder, store, kept, ranks)
                  for folder in sorted(inputs.wheel_folders, key=lambda f: f.name)]
    # After the commit folders: a commit's pages never link a base folder that is already gone.
    decisions += [_base_folder_decision(folder, store, kept, inputs)
                  for folder in sorted(inputs.base_folders, key=lambda f: f.name)]
    decisions = _keep_shared_digests(inputs, decisions) + untagged_decisions(inputs)
    commits = sorted(ranks.values(), key=lambda r: (r.rank is None, r.rank or 0, r.commit))
    return RetentionPlan(keep_commits=inputs.keep_commits, commits=tuple(commits), decisions=tuple(decisions),
                         notes=tuple(_notes(inputs)))


def _notes(inputs: RetentionInputs) -> list[str]:
    """What the plan took into account besides the listings: the window, the runs in progress."""
    notes = []
    if (recent := inputs.recent) is not None:
        notes.append(f"Kept whatever its rank: anything pushed since {recent.since.isoformat()} "
                     f"(the last {recent.hours} hours).")
    for run in inputs.runs_in_use:
        if run.commit:
            notes.append(f"In progress: {run.label} releases {run.commit[:12]}: kept, with the bases and images "
                         "it names.")
        else:
            notes.append(f"In progress: {run.label} has no plan yet: it will release the branch tip as of its "
                         "date, which the newest commits and everything pushed recently cover; apply_retention "
                         "reads the runs again.")
    return notes


def _commit_reason(ranks: Mapping[str, CommitRank], commit: str) -> str:
    r = ranks[commit]
    when = r.pushed_at.isoformat() if r.pushed_at else "no push time"
    return f"commit {commit[:12]} ({when}): {'; '.join(r.reasons)}"


def _tag_decision(t: ListedTag, kept: set[str], ranks: Mapping[str, CommitRank],
                  bases: Mapping[BaseUnit, Verdict]) -> RetentionDecision:
    """Unknown and ambiguous tags and the aliases stay; a per-commit tag follows its commit, a base its unit."""
    common: dict[str, Any] = {"target": "tag", "location": t.repo.location, "name": t.name,
                              "digest": t.info.digest, "variant": t.variant, "pushed_at": t.info.pushed_at}
    if t.kind is None:
        kind: DecisionKind = "ambiguous" if t.ambiguous else "unknown"
        return RetentionDecision(action="keep", kind=kind, reason=t.note, **common)
    if t.kind in ALIAS_KINDS:
        return RetentionDecision(action="keep", kind=t.kind, reason="a nightly alias: never deleted", **common)
    if t.kind in PER_COMMIT_KINDS:
        assert t.commit is not None
        action: Literal["delete", "keep"] = "keep" if t.commit in kept else "delete"
        return RetentionDecision(action=action, kind=t.kind, commit=t.commit, reason=_commit_reason(ranks, t.commit),
                                 **common)
    assert t.kind in BASE_KINDS and t.variant is not None and t.key is not None
    keep, why = bases[(t.variant, t.key)]
    return RetentionDecision(action="keep" if keep else "delete", kind=t.kind, base_key=t.key, reason=why, **common)


def _folder_decision(folder: WheelFolder, store: str, kept: set[str],
                     ranks: Mapping[str, CommitRank]) -> RetentionDecision:
    """``nightly/`` and folders that are not commits stay; a commit folder follows its commit."""
    common: dict[str, Any] = {"target": "folder", "location": store, "name": folder.name}
    if folder.name == NIGHTLY_FOLDER:
        return RetentionDecision(action="keep", kind="nightly_folder",
                                 reason="the nightly alias folder: never deleted", **common)
    if folder.name == BASE_FOLDER:
        return RetentionDecision(action="keep", kind="unknown",
                                 reason="the base wheels folder: each base in it is decided on its own", **common)
    if SHA_RE.match(folder.name):
        return RetentionDecision(action="keep" if folder.name in kept else "delete", kind="commit_folder",
                                 commit=folder.name, reason=_commit_reason(ranks, folder.name), **common)
    return RetentionDecision(action="keep", kind="unknown", reason="not a commit folder: unknown, never touched",
                             **common)


def _base_folder_decision(folder: WheelFolder, store: str, kept: set[str],
                          inputs: RetentionInputs) -> RetentionDecision:
    """A base-wheels folder stays while a kept commit's pages link it, while it is recent, and while a nightly
    run in progress builds on its base; otherwise nothing links it any more."""
    common: dict[str, Any] = {"target": "folder", "location": store, "name": f"{BASE_FOLDER}/{folder.name}",
                              "kind": "base_folder"}
    linking = sorted(c for c, names in inputs.base_links.items() if folder.name in names and c in kept)
    if linking:
        return RetentionDecision(action="keep", reason=f"linked by kept commit(s) {', '.join(c[:12] for c in linking)}",
                                 **common)
    recent = inputs.recent
    if folder.modified_at is None or (recent is not None and folder.modified_at >= recent.since):
        when = folder.modified_at.isoformat() if folder.modified_at else "at an unknown time"
        return RetentionDecision(action="keep", reason=f"written {when}: recent", **common)
    in_use = [run.label for run in inputs.runs_in_use
              if any(folder.name.startswith(f"{key}-{variant}-") for variant, key in run.base_keys)]
    if in_use:
        return RetentionDecision(action="keep", reason=f"its base is in use by {', '.join(in_use)}", **common)
    return RetentionDecision(action="delete", reason="no kept commit links it", **common)


def _keep_shared_digests(inputs: RetentionInputs, decisions: list[RetentionDecision]) -> list[RetentionDecision]:
    """Where the registry deletes by digest, a doomed tag sharing a digest with a kept tag stays."""
    by_digest = {r.repository.location for r in inputs.repositories if r.repository.deletes_by_digest}
    kept_digest: dict[tuple[str, str], str] = {}
    for d in decisions:
        if d.target == "tag" and d.action == "keep" and d.location in by_digest and d.digest:
            kept_digest.setdefault((d.location, d.digest), d.name)
    result = []
    for d in decisions:
        other = kept_digest.get((d.location, d.digest or "")) if d.action == "delete" else None
        if other is not None:
            d = d.model_copy(update={
                "action": "keep",
                "reason": f"{d.reason} — but kept: it shares its digest with kept tag {other}, and this registry "
                          f"deletes by digest, which would delete {other} too"})
        result.append(d)
    return result
