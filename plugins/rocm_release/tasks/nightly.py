"""The operators the DAG wires: thin Airflow adapters around the plain-Python core.

Heavy clients (git, registries, docker) are imported inside ``execute`` so
that parsing the DAG stays fast and needs no network.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.providers.standard.operators.branch import BaseBranchOperator
from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from rocm_release.adapters.config_file import load_config
from rocm_release.core.config import ReleaseConfig
from rocm_release.core.decision import Observation, PathDecision, decide
from rocm_release.core.plan import (
    ParamsError,
    ReleaseParams,
    ReleasePlan,
    RunKind,
    VariantPlan,
    make_plan,
    parse_params,
)
from rocm_release.tasks.sensors import plan_from_xcom

CACHE_ENV = "ROCM_NIGHTLY_CACHE_DIR"
SENSOR_TASKS = {
    "base": "check_base_image",
    "wheels_image": "check_wheels_image",
    "release_image": "check_release_image",
    "wheels_published": "check_wheels_published",
}


def cache_dir() -> Path:
    """This host's cache folder (git mirrors): ``$ROCM_NIGHTLY_CACHE_DIR`` or ``~/.cache/rocm-nightly``."""
    named = os.environ.get(CACHE_ENV)
    return Path(named) if named else Path.home() / ".cache" / "rocm-nightly"


def run_kind(run_type: object) -> RunKind:
    """Airflow's run type → ours: scheduled, backfill, or manual (every other trigger)."""
    value = str(getattr(run_type, "value", run_type))
    if value == "scheduled":
        return "scheduled"
    if value == "backfill":
        return "backfill"
    return "manual"


def release_time(kind: RunKind, context: Mapping[str, Any]) -> datetime:
    """The moment whose branch tip is released: data interval end (scheduled/backfill), or run_after."""
    dag_run = context["dag_run"]
    if kind != "manual":
        for key in ("data_interval_end", "logical_date"):
            value = context.get(key)
            if value is not None:
                return datetime.fromisoformat(str(value)) if not isinstance(value, datetime) else value
    # A manual run may have no logical date (AIRFLOW3.md §6): run_after always exists.
    value = dag_run.run_after
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def validated_params(context: Mapping[str, Any], config: ReleaseConfig, kind: RunKind) -> ReleaseParams:
    """The run's Params, validated; unknown keys in the trigger's conf are errors too."""
    conf = dict(getattr(context["dag_run"], "conf", None) or {})
    merged = {**dict(context.get("params") or {}), **conf}
    params = parse_params(merged, config)
    if kind == "backfill" and params.commit:
        raise ParamsError(
            "param 'commit': a backfill releases the branch tip as of each date; "
            "name a commit in a manual run instead"
        )
    return params


class ResolveReleaseOperator(BaseOperator):
    """Turn Params + config + the run's dates into a frozen ReleasePlan (the task's XCom)."""

    ui_color = "#fdebd0"

    def execute(self, context: Any) -> dict[str, Any]:
        """Validate everything before any side effect, then resolve the commit and the parents."""
        from rocm_release.adapters.git import GitMirror
        from rocm_release.adapters.registry.clients import registry_for_reference

        config = load_config()
        kind = run_kind(context["dag_run"].run_type)
        try:
            params = validated_params(context, config, kind)
        except ParamsError as exc:
            raise AirflowFailException(str(exc)) from exc
        as_of = release_time(kind, context)
        mirror = GitMirror(config.project.git_url, cache_dir() / "git")
        mirror.update()
        if params.commit:
            commit = mirror.resolve(params.commit)
        else:
            commit = mirror.tip_as_of(config.project.branch, as_of)
        files = {path: mirror.read_file(commit, path) for path in config.project.base_inputs}
        dockerfile = mirror.read_file(commit, config.project.base_dockerfile)
        parents: dict[str, str] = {}
        known = [config.cache_registry, config.public_registry]
        for variant in config.variants:
            ref = variant.parent_image or config.project.parent_image
            if ref in parents:
                continue
            registry, repo, tag, digest = registry_for_reference(ref, known)
            if digest is None:
                found = registry.lookup(repo, tag or "latest")
                if not found.present:
                    raise AirflowFailException(f"parent image {ref} does not exist: {found.reason}")
                digest = found.digest
            # "host/repo:tag@sha256:…": docker pulls by the digest; the tag stays for people.
            parents[ref] = ref if "@" in ref else f"{ref}@{digest}"
        plan = make_plan(
            config,
            commit=commit,
            run_kind=kind,
            as_of=as_of,
            params=params,
            base_dockerfile=dockerfile,
            base_inputs=files,
            parent_images=parents,
            commit_time=mirror.commit_time(commit),
        )
        self.log.info("Release plan (%s run, as of %s): commit %s", kind, as_of.isoformat(), commit)
        for v in plan.variants:
            self.log.info("  %s: base key %s, parent %s", v.name, v.base_key, v.parent_image)
        if plan.dry_run:
            self.log.info("DRY RUN: the plan follows; nothing will be built, pushed or uploaded.\n%s",
                          plan.model_dump_json(indent=2))
        return plan.model_dump(mode="json")


def observations(context: Any, variant: str) -> dict[str, Observation]:
    """The four sensors' XComs of one variant."""
    ti = context["ti"]
    found = {}
    for name, task in SENSOR_TASKS.items():
        raw = ti.xcom_pull(task_ids=f"{variant}.{task}")
        if raw is None:
            raise AirflowFailException(f"sensor {variant}.{task} left no observation")
        found[name] = Observation.model_validate(raw)
    return found


class ChoosePathOperator(BaseBranchOperator):
    """Pick the smallest set of builds from what the sensors saw (DESIGN.md's table)."""

    ui_color = "#e8daef"

    def __init__(self, *, variant: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.variant = variant

    def choose_branch(self, context: Any) -> Iterable[str]:
        """Decide, log why, hand the decision on through XCom, and return the tasks to run."""
        plan = plan_from_xcom(context)
        v = plan.variant(self.variant)
        seen = observations(context, self.variant)
        decision = decide(
            base=seen["base"],
            wheels_image=seen["wheels_image"],
            release_image=seen["release_image"],
            wheels_published=seen["wheels_published"],
            base_key=v.base_key,
            force_rebuild=plan.force_rebuild,
        )
        context["ti"].xcom_push(key="decision", value=decision.model_dump(mode="json"))
        for reason in decision.reasons:
            self.log.info("%s — %s", self.variant, reason)
        self.log.info("%s: builds to run: %s", self.variant, ", ".join(decision.builds) or "none (reuse)")
        if plan.dry_run:
            self._log_dry_run(plan, v, decision, str(context["run_id"]))
            return []
        chosen = decision.builds or ("reuse_cached_images",)
        return [f"{self.variant}.{task}" for task in chosen]


    def _log_dry_run(self, plan: ReleasePlan, v: VariantPlan, decision: PathDecision, run_id: str) -> None:
        """Print what the run would do, command by command; do none of it."""
        import shlex

        from rocm_release.adapters.docker_build import StageInputs, planned_commands

        config = load_config()
        self.log.info("DRY RUN: %s would run %s; nothing runs.", self.variant,
                      list(decision.builds) or ["reuse_cached_images"])
        inputs = StageInputs(
            context=Path(f"<source of {plan.commit[:12]}>"), base_dockerfile=config.project.base_dockerfile,
            dockerfile=config.project.dockerfile, targets=config.project.targets.model_dump(),
            network=config.build.network, run_id=run_id,
            secrets={s: Path(f"<secret file {s}>") for s in config.build.secrets},
        )
        for command in planned_commands(plan, v, decision.builds, inputs, decision.base.digest):
            self.log.info("DRY RUN would run: %s", shlex.join(command))
        for kind, tag in v.cache_tags.model_dump().items():
            self.log.info("DRY RUN would tag %s (the %s image)", plan.cache_ref(tag), kind)
        self.log.info("DRY RUN would copy to %s and %s", plan.public_ref(v.public_tags.nightly_commit),
                      plan.public_ref(v.public_tags.base_nightly_commit))
        self.log.info("DRY RUN would publish wheels to %s%s", v.wheels_url,
                      "" if not decision.wheels_published.present else " (already published: verify only)")
        if plan.promote:
            self.log.info("DRY RUN would promote %s, %s and %s (only forwards)",
                          plan.public_ref(v.public_tags.nightly), plan.public_ref(v.public_tags.base_nightly),
                          v.nightly_wheels_url)


def decision_from_xcom(context: Any, variant: str) -> PathDecision:
    """The decision ``choose_path`` made for a variant."""
    raw = context["ti"].xcom_pull(task_ids=f"{variant}.choose_path", key="decision")
    if raw is None:
        raise AirflowFailException(f"{variant}.choose_path left no decision")
    return PathDecision.model_validate(raw)


class ReuseCachedImagesOperator(BaseOperator):
    """Every image exists: hand the cached digests on, pinned, to the publishing tasks."""

    ui_color = "#d5f5e3"

    def __init__(self, *, variant: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.variant = variant

    def execute(self, context: Any) -> dict[str, str]:
        """The four digests of the variant, as observed."""
        plan = plan_from_xcom(context)
        decision = decision_from_xcom(context, self.variant)
        digests = {
            "base": decision.base.digest,
            "base_wheels": decision.base.paired_digest,
            "wheels": decision.wheels_image.digest,
            "release": decision.release_image.digest,
        }
        missing = sorted(k for k, d in digests.items() if not d)
        if missing:
            raise AirflowFailException(f"reuse chosen but no digest observed for {missing}")
        refs = {k: plan.cache_ref(str(d)) for k, d in digests.items()}
        for kind, ref in refs.items():
            self.log.info("%s %s: reusing %s", self.variant, kind, ref)
        return refs


class _Timed(BaseOperator):
    """Records how long ``execute`` took (XCom key ``timing``) for the release summary."""

    def pre_execute(self, context: Any) -> None:
        """Start the clock."""
        self._started = time.monotonic()
        super().pre_execute(context)

    def post_execute(self, context: Any, result: Any = None) -> None:
        """Hand the duration on."""
        context["ti"].xcom_push(key="timing", value=round(time.monotonic() - self._started, 3))
        super().post_execute(context, result)


class BuildImageOperator(_Timed):
    """Build one stage on the ROCm pool (its ``queue`` and ``pool``) and push it by digest."""

    ui_color = "#fadbd8"

    def __init__(self, *, stage: str, variant: str, config: ReleaseConfig, **kwargs: Any) -> None:
        kwargs.setdefault("queue", config.build.queue)
        kwargs.setdefault("pool", config.build.pool)
        kwargs.setdefault("retries", 0)
        kwargs.setdefault("execution_timeout", timedelta(minutes=config.build.timeout_minutes))
        super().__init__(**kwargs)
        self.stage = stage
        self.variant = variant

    def execute(self, context: Any) -> dict[str, str]:
        """Export the source at the commit, build, push; return kind → ``repo@sha256:…``."""
        import tempfile

        from rocm_release.adapters.docker_build import StageInputs, build_stage, docker_session
        from rocm_release.adapters.git import GitMirror
        from rocm_release.adapters.registry.clients import registry_for

        plan = plan_from_xcom(context)
        v = plan.variant(self.variant)
        config = load_config()
        registry = registry_for(config.cache_registry)
        logins = [registry.login_credentials()] if _needs_login(config) else []
        with tempfile.TemporaryDirectory(prefix="rocm-nightly-build-") as tmp, \
                _secret_files(config.build.secrets, Path(tmp) / "secrets") as secrets, \
                docker_session(_docker_host(config), logins) as env:
            source = Path(tmp) / "src"
            mirror = GitMirror(plan.git_url, cache_dir() / "git")
            mirror.update()
            mirror.export(plan.commit, source)
            inputs = StageInputs(
                context=source,
                base_dockerfile=config.project.base_dockerfile,
                dockerfile=config.project.dockerfile,
                targets=config.project.targets.model_dump(),
                network=config.build.network,
                run_id=str(context["run_id"]),
                secrets=secrets,
                base_digest=None if self.stage == "base" else current_refs(context, self.variant)["base"].split("@")[1],
            )
            return build_stage(plan=plan, v=v, stage=self.stage, inputs=inputs, registry=registry, env=env,
                               log=self.log.info)


def _needs_login(config: ReleaseConfig) -> bool:
    return config.cache_registry.kind == "ecr" or config.cache_registry.connection_id is not None


def _docker_host(config: ReleaseConfig) -> str | None:
    """The daemon: the docker connection's host when configured, else ``$DOCKER_HOST`` (or docker's default)."""
    if not config.build.docker_conn_id:
        return os.environ.get("DOCKER_HOST")
    from airflow.sdk import BaseHook

    return str(BaseHook.get_connection(config.build.docker_conn_id).host)


@contextmanager
def _secret_files(secret_ids: Iterable[str], folder: Path) -> Iterator[dict[str, Path]]:
    """Each build secret's value (the password of the Airflow connection of the same id) in a 0600 file,
    removed when the build ends. Values never reach build args, labels, logs or image history."""
    from airflow.sdk import BaseHook

    files: dict[str, Path] = {}
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        for secret_id in secret_ids:
            path = folder / secret_id
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            value = BaseHook.get_connection(secret_id).password
            if not value:
                os.close(fd)
                raise AirflowFailException(f"build secret {secret_id!r}: its connection has no password (the value)")
            with os.fdopen(fd, "w") as out:
                out.write(value)
            files[secret_id] = path
        yield files
    finally:
        for path in files.values():
            path.unlink(missing_ok=True)


def current_refs(context: Any, variant: str) -> dict[str, str]:
    """The pinned refs of a variant's four images: what this run built, else what the sensors saw."""
    plan = plan_from_xcom(context)
    decision = decision_from_xcom(context, variant)
    ti = context["ti"]
    refs: dict[str, str] = {}
    observed = {
        "base": decision.base.digest,
        "base_wheels": decision.base.paired_digest,
        "wheels": decision.wheels_image.digest,
        "release": decision.release_image.digest,
    }
    for kind, digest in observed.items():
        if digest:
            refs[kind] = plan.cache_ref(digest)
    for task in ("build_base_image", "build_wheels", "build_release_image", "reuse_cached_images"):
        built = ti.xcom_pull(task_ids=f"{variant}.{task}")
        if built:
            refs.update(built)
    return refs


class _VariantOperator(_Timed):
    """A per-variant task: it knows its variant and skips when the run did not select it."""

    def __init__(self, *, variant: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.variant = variant

    def _plan(self, context: Any) -> tuple[ReleasePlan, VariantPlan]:
        plan = plan_from_xcom(context)
        if self.variant not in [v.name for v in plan.variants]:
            raise AirflowSkipException(f"variant {self.variant} is not selected in this run")
        if plan.dry_run:
            raise AirflowSkipException("dry run: nothing is pushed, uploaded or promoted")
        return plan, plan.variant(self.variant)


class PushImagesOperator(_VariantOperator):
    """Give the digests their cache tags, then copy release and base images to the public registry."""

    ui_color = "#d4efdf"

    def execute(self, context: Any) -> dict[str, Any]:
        """Publish the four digests of this variant; return what was published."""
        from rocm_release.adapters.images import push_images
        from rocm_release.adapters.registry.clients import blob_registry_for, registry_for

        plan, v = self._plan(context)
        config = load_config()
        pushed = push_images(
            plan=plan, v=v, refs=current_refs(context, self.variant),
            cache=registry_for(config.cache_registry), cache_blobs=blob_registry_for(config.cache_registry),
            public=blob_registry_for(config.public_registry), log=self.log.info,
        )
        for asset in self.outlets:
            context["outlet_events"][asset].extra = {"commit": plan.commit, "variant": v.name, **pushed.public}
        return pushed.model_dump(mode="json")


class PublishWheelsOperator(_VariantOperator):
    """Wheels of both wheels images → verified, platform-retagged, uploaded, then the PEP 503 index."""

    ui_color = "#d4efdf"

    def execute(self, context: Any) -> list[dict[str, Any]]:
        """Read /dist of the project and base wheels images through the registry API and publish them."""
        import tempfile

        from rocm_release.adapters.images import digest_of
        from rocm_release.adapters.registry.clients import blob_registry_for
        from rocm_release.adapters.store import store_root
        from rocm_release.adapters.wheel_retag import retag_platform
        from rocm_release.adapters.wheels_image import file_sink, read_dist
        from rocm_release.adapters.wheels_publish import publish_wheels

        plan, v = self._plan(context)
        config = load_config()
        refs = current_refs(context, self.variant)
        registry = blob_registry_for(config.cache_registry)
        with tempfile.TemporaryDirectory(prefix="rocm-nightly-wheels-") as tmp:
            raw, tagged = Path(tmp) / "raw", Path(tmp) / "tagged"
            raw.mkdir()
            tagged.mkdir()
            for kind in ("wheels", "base_wheels"):
                files = read_dist(registry, plan.cache_repository, digest_of(refs[kind]), sink=file_sink(raw))
                self.log.info("%s %s: verified %s", self.variant, kind, ", ".join(f.name for f in files))
            wheels = [retag_platform(p, v.variant.platform_tag, tagged) for p in sorted(raw.glob("*.whl"))]
            folder = store_root(v.wheels_url, config.wheel_store.connection_id)
            published = publish_wheels(wheels, folder, v.wheels_url, self.log.info)
        for asset in self.outlets:
            context["outlet_events"][asset].extra = {"commit": plan.commit, "variant": v.name,
                                                     "index": v.wheels_url}
        return [f.model_dump(mode="json") for f in published]


class PromoteNightlyOperator(_VariantOperator):
    """Move the nightly aliases (public image tags and ``nightly/<variant>/``), only forwards."""

    ui_color = "#fdedec"

    def execute(self, context: Any) -> dict[str, Any]:
        """Promote if this run may, and only if that is not a step back; say why either way."""
        from rocm_release.adapters.git import GitMirror, SourceError
        from rocm_release.adapters.images import alias_state, digest_of, ensure_tag
        from rocm_release.adapters.registry.clients import registry_for
        from rocm_release.adapters.store import store_root
        from rocm_release.adapters.wheels_publish import promote_index, read_published
        from rocm_release.core.promotion import forwards, may_promote

        plan, v = self._plan(context)
        allowed = may_promote(plan)
        if not allowed.move:
            self.log.info("%s: not promoting: %s", self.variant, allowed.why)
            return {"promoted": False, "why": allowed.why}
        config = load_config()
        mirror = GitMirror(plan.git_url, cache_dir() / "git")
        mirror.update()

        def commit_time(sha: str) -> datetime | None:
            try:
                return mirror.commit_time(sha)
            except SourceError:
                return None

        def is_ancestor(old: str, new: str) -> bool:
            try:
                return mirror.is_ancestor(old, new)
            except SourceError:
                return False

        public = registry_for(config.public_registry)
        pushed = context["ti"].xcom_pull(task_ids=f"{self.variant}.push_images") or {}
        digests = pushed.get("digests") or {k: digest_of(r) for k, r in current_refs(context, self.variant).items()}
        result: dict[str, Any] = {"promoted": False}
        image_alias = alias_state(public, plan.public_repository, v.public_tags.nightly)
        verdict = forwards(image_alias.commit, plan.commit, is_ancestor=is_ancestor, commit_time=commit_time)
        self.log.info("%s images: %s", self.variant, verdict.why)
        if verdict.move:
            ensure_tag(public, plan.public_repository, v.public_tags.nightly, digests["release"], self.log.info)
            ensure_tag(public, plan.public_repository, v.public_tags.base_nightly, digests["base"], self.log.info)
            result["images"] = True
        alias = store_root(v.nightly_wheels_url, config.wheel_store.connection_id)
        current = read_published(alias, v.nightly_wheels_url)
        wheel_verdict = forwards(current.commit if current else None, plan.commit, is_ancestor=is_ancestor,
                                 commit_time=commit_time)
        self.log.info("%s wheels: %s", self.variant, wheel_verdict.why)
        if wheel_verdict.move:
            promote_index(store_root(v.wheels_url, config.wheel_store.connection_id), v.wheels_url, alias,
                          v.nightly_wheels_url, commit=plan.commit, variant=v.name, log=self.log.info)
            result["wheels"] = True
        result["promoted"] = bool(result.get("images") or result.get("wheels"))
        result["why"] = f"images: {verdict.why}; wheels: {wheel_verdict.why}"
        return result


class ReleaseSummaryOperator(BaseOperator):
    """One report per run: per variant the path taken and why, digests, sizes, wheels, commands, durations."""

    ui_color = "#fcf3cf"

    def execute(self, context: Any) -> dict[str, Any]:
        """Gather what the tasks handed on, print the report, and store it next to the wheels."""
        from rocm_release.adapters.registry.clients import registry_for
        from rocm_release.adapters.store import store_root
        from rocm_release.core.report import install_commands, public_index_url, render_markdown, to_json

        plan = plan_from_xcom(context)
        config = load_config()
        ti = context["ti"]
        variants: dict[str, Any] = {}
        complete = True
        for v in plan.variants:
            def pull(task: str, key: str = "return_value", _v: str = v.name) -> Any:
                return ti.xcom_pull(task_ids=f"{_v}.{task}", key=key)

            raw_decision = pull("choose_path", "decision")
            decision = PathDecision.model_validate(raw_decision) if raw_decision else None
            pushed, wheels, promotion = pull("push_images"), pull("publish_wheels"), pull("promote_nightly")
            entry: dict[str, Any] = {
                "path": ("reused: no build" if decision and decision.reuse
                         else f"built: {', '.join(decision.builds)}" if decision else "no decision (failed early)"),
                "reasons": list(decision.reasons) if decision else [],
                "digests": (pushed or {}).get("digests", {}),
                "public": (pushed or {}).get("public", {}),
                "wheels": wheels or [],
                "promotion": promotion,
                "durations": {t: pull(t, "timing") for t in TIMED_TASKS if pull(t, "timing") is not None},
            }
            if not plan.dry_run and (pushed is None or wheels is None):
                complete = False
            if entry["digests"]:
                entry["sizes"] = _image_sizes(registry_for(config.cache_registry), plan.cache_repository,
                                              entry["digests"])
            index = public_index_url(config.wheel_store.public_url, plan.store_url, v.wheels_url)
            project = plan.project
            entry["index_url"] = index
            entry["commands"] = install_commands(plan, v, index, project, entry["digests"].get("release"))
            variants[v.name] = entry
        outcome = "dry run (nothing published)" if plan.dry_run else "published" if complete else "FAILED"
        report = {
            "project": plan.project, "commit": plan.commit,
            "commit_time": plan.commit_time.isoformat() if plan.commit_time else None,
            "run_kind": plan.run_kind, "run_id": str(context["run_id"]), "as_of": plan.as_of.isoformat(),
            "dry_run": plan.dry_run, "outcome": outcome, "generated": datetime.now(UTC).isoformat(),
            "variants": variants,
        }
        markdown = render_markdown(report)
        self.log.info("Release summary:\n%s", markdown)
        if outcome == "published":
            folder = store_root(f"{plan.store_url}/{plan.commit}/", config.wheel_store.connection_id)
            (folder / "RELEASE.json").write_text(to_json(report))  # type: ignore[attr-defined]
            (folder / "RELEASE.md").write_text(markdown)  # type: ignore[attr-defined]
            self.log.info("Stored %s and RELEASE.json", plan.summary_url)
        elif not plan.dry_run:
            raise AirflowFailException("the release is incomplete: see the variants without digests or wheels above")
        return report


TIMED_TASKS = ("check_base_image", "check_wheels_image", "check_release_image", "check_wheels_published",
               "choose_path", "build_base_image", "build_wheels", "build_release_image", "reuse_cached_images",
               "push_images", "publish_wheels", "promote_nightly")


def _image_sizes(registry: Any, repository: str, digests: Mapping[str, str]) -> dict[str, int]:
    """Compressed size of each image: the sum of its config and layer sizes from the manifest."""
    sizes = {}
    for kind, digest in digests.items():
        doc = json.loads(registry.manifest(repository, digest).raw)
        sizes[kind] = int(doc.get("config", {}).get("size", 0)) + sum(int(x.get("size", 0))
                                                                       for x in doc.get("layers", []))
    return sizes


__all__ = [
    "BuildImageOperator",
    "ChoosePathOperator",
    "PromoteNightlyOperator",
    "PublishWheelsOperator",
    "PushImagesOperator",
    "ReleaseSummaryOperator",
    "ResolveReleaseOperator",
    "ReuseCachedImagesOperator",
]
