"""Which base units to keep: ``<key>-<variant>-base`` and ``-base-wheels``, decided together by key.

A base is kept when a kept wheels or release image was built on it (its labels name the base's key
or digest), when ``base-nightly-<variant>`` points to it, when it is the newest base of its variant,
when a nightly run in progress uses it, when it was pushed within the recent window, when it has no
push time, or when a kept image of its variant carries no base labels at all.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from rocm_release.core.plan import LABEL_BASE_DIGEST, LABEL_BASE_KEY
from rocm_release.core.retention_model import BASE_KINDS, BaseUse, RecentWindow
from rocm_release.core.retention_ranking import Analysis, ListedTag, as_utc

MAX_NAMES = 3  # names quoted in one reason before "and N more"

BaseUnit = tuple[str, str]  # (variant, key)
Verdict = tuple[bool, str]  # (keep?, why)


def _names(names: Iterable[str]) -> str:
    unique = sorted(set(names))
    shown = ", ".join(unique[:MAX_NAMES])
    return shown + (f" and {len(unique) - MAX_NAMES} more" if len(unique) > MAX_NAMES else "")


@dataclass
class _BaseUsers:
    """What the kept wheels/release images' labels say about the bases they were built on."""

    by_key: defaultdict[BaseUnit, list[str]] = field(default_factory=lambda: defaultdict(list))
    by_digest: defaultdict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    unlabelled: defaultdict[str, list[str]] = field(default_factory=lambda: defaultdict(list))  # by variant

    def add(self, image: ListedTag, use: BaseUse | None) -> None:
        assert image.variant is not None
        if use is None or (use.base_key is None and use.base_digest is None):
            self.unlabelled[image.variant].append(image.name)
            return
        if use.base_key:
            self.by_key[(image.variant, use.base_key)].append(image.name)
        if use.base_digest:
            self.by_digest[use.base_digest].append(image.name)


@dataclass(frozen=True)
class _BaseFacts:
    """Everything a base unit's verdict depends on."""

    users: _BaseUsers
    aliases: Mapping[str, list[str]]  # digest → the base-nightly aliases pointing to it
    times: Mapping[BaseUnit, datetime | None]  # newest push time of the unit's tags
    newest: Mapping[str, tuple[str, datetime]]  # variant → its newest base (key, time)
    in_use: Mapping[BaseUnit | str, list[str]]  # unit or digest → the runs in progress using it
    recent: RecentWindow | None


def _base_units(tags: Iterable[ListedTag]) -> dict[BaseUnit, list[ListedTag]]:
    units: dict[BaseUnit, list[ListedTag]] = defaultdict(list)
    for t in tags:
        if t.kind in BASE_KINDS and t.variant and t.key:
            units[(t.variant, t.key)].append(t)
    return units


def _base_users(analysis: Analysis, base_use: Mapping[str, BaseUse | None]) -> _BaseUsers:
    users = _BaseUsers()
    for t in analysis.kept_built_images():
        if t.info.digest not in base_use:
            raise ValueError(f"the labels of {t.repo.location}:{t.name} ({t.info.digest}) were not read; "
                             "read every image that images_to_inspect() names")
        users.add(t, base_use[t.info.digest])
    return users


def _alias_targets(tags: Iterable[ListedTag]) -> dict[str, list[str]]:
    aliases: dict[str, list[str]] = defaultdict(list)
    for t in tags:
        if t.kind == "base_nightly":
            aliases[t.info.digest].append(f"{t.repo.location}:{t.name}")
    return aliases


def _unit_times(units: Mapping[BaseUnit, list[ListedTag]]) -> dict[BaseUnit, datetime | None]:
    times: dict[BaseUnit, datetime | None] = {}
    for unit, members in units.items():
        stamps = [w for m in members if (w := as_utc(m.info.pushed_at)) is not None]
        times[unit] = max(stamps) if stamps else None
    return times


def _newest_bases(times: Mapping[BaseUnit, datetime | None]) -> dict[str, tuple[str, datetime]]:
    newest: dict[str, tuple[str, datetime]] = {}
    for (variant, key), when in times.items():
        if when is not None and (variant not in newest or when > newest[variant][1]):
            newest[variant] = (key, when)
    return newest


def _keep_reasons(unit: BaseUnit, members: list[ListedTag], facts: _BaseFacts) -> list[str]:
    """Every reason to keep a base unit; none: it goes."""
    variant, key = unit
    digests = {m.info.digest for m in members}
    reasons: list[str] = []
    if facts.users.by_key.get(unit):
        reasons.append(f"kept image(s) {_names(facts.users.by_key[unit])} were built on it ({LABEL_BASE_KEY})")
    named = [n for d in digests for n in facts.users.by_digest.get(d, [])]
    if named:
        reasons.append(f"kept image(s) {_names(named)} name its digest ({LABEL_BASE_DIGEST})")
    pointed = [a for d in digests for a in facts.aliases.get(d, [])]
    if pointed:
        reasons.append(f"{_names(pointed)} points to it")
    runs = facts.in_use.get(unit, []) + [r for d in sorted(digests) for r in facts.in_use.get(d, [])]
    if runs:
        reasons.append(f"in use by {_names(runs)}")
    if facts.users.unlabelled.get(variant):
        reasons.append(f"kept image(s) {_names(facts.users.unlabelled[variant])} of {variant} carry no base labels: "
                       f"every base of {variant} is kept")
    when = facts.times[unit]
    if when is None:
        reasons.append("no push time: cannot tell whether it is the newest base, kept")
    elif facts.newest[variant][0] == key or when == facts.newest[variant][1]:
        reasons.append(f"the newest base of {variant} (pushed {when.isoformat()}): the next night may reuse it")
    elif facts.recent is not None and facts.recent.covers(when):
        reasons.append(facts.recent.reason(when))
    return reasons


def _verdict(unit: BaseUnit, members: list[ListedTag], facts: _BaseFacts) -> Verdict:
    variant, key = unit
    reasons = _keep_reasons(unit, members, facts)
    if reasons:
        return True, f"base {key} of {variant}: {'; '.join(reasons)}"
    when = facts.times[unit]
    top_key, top_when = facts.newest[variant]
    return False, (f"base {key} of {variant} (pushed {when.isoformat() if when else '?'}): "
                   "no kept wheels/release image was built on it, no base-nightly alias points "
                   f"to it, and {top_key} (pushed {top_when.isoformat()}) is newer")


def base_verdicts(analysis: Analysis, base_use: Mapping[str, BaseUse | None]) -> dict[BaseUnit, Verdict]:
    """(variant, key) → (keep?, why) for every base unit in the cache repository."""
    units = _base_units(analysis.tags)
    users = _base_users(analysis, base_use)
    times = _unit_times(units)
    in_use: dict[BaseUnit | str, list[str]] = defaultdict(list)
    for run in analysis.runs:
        for unit in run.base_keys:
            in_use[unit].append(run.label)
        for digest in run.digests:
            in_use[digest].append(run.label)
    facts = _BaseFacts(users, _alias_targets(analysis.tags), times, _newest_bases(times), in_use, analysis.recent)
    return {unit: _verdict(unit, members, facts) for unit, members in units.items()}
