"""The release configuration: a typed, validated model of one YAML document.

``parse_config`` validates text; reading the file named by ``ROCM_NIGHTLY_CONFIG``
is ``adapters.config_file.load_config``. Unknown keys are errors, and every error
names the file, the field, the bad value and what is allowed.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from rocm_release.core.errors import FatalError, shown
from rocm_release.core.frozen import Frozen
from rocm_release.core.names import REPOSITORY_MAX, REPOSITORY_RE, TAG_RE, redact
from rocm_release.core.retrying import (
    DEFAULT_FIRST_DELAY_SECONDS,
    DEFAULT_MAX_DELAY_SECONDS,
    DEFAULT_WINDOW_SECONDS,
    Retrying,
)

NAME_RE = r"^[a-z][a-z0-9]{1,31}$"
# Placeholders a public tag pattern may use, with the longest value each can take.
TAG_FIELDS = {"variant": "v" * 32, "commit": "0" * 40}
BUILD_ARG_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
ARCH_RE = r"^gfx[0-9a-f]{3,4}[a-z0-9:+-]*$"
PLATFORM_TAG_RE = re.compile(r"^manylinux_[0-9]+_[0-9]+_(x86_64|aarch64)$")


class ConfigError(ValueError, FatalError):
    """The config file cannot be used; the message names the file and every bad field."""


class _Strict(Frozen):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class Targets(_Strict):
    """Dockerfile targets: two in the base Dockerfile, two in the project Dockerfile."""

    base: str = "base"
    base_wheels: str = "base-wheels"
    wheels: str = "wheels"
    release: str = "release"


def _check_build_args(value: dict[str, str]) -> dict[str, str]:
    for key in value:
        if not BUILD_ARG_RE.match(key):
            raise ValueError(f"build arg name {key!r} is not an identifier ([A-Za-z_][A-Za-z0-9_]*)")
    return value


DAY = 24 * 60 * 60
# A URL's userinfo: ``scheme://<userinfo>@host…`` (up to the last "@" before the path).
_USERINFO_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://(?P<userinfo>[^/?#\s]*)@")
# Airflow's cron presets, or five whitespace-separated cron fields of cron's characters.
CRON_RE = re.compile(
    r"^(@(once|continuous|hourly|daily|weekly|monthly|quarterly|yearly|annually|midnight)"
    r"|[0-9A-Za-z*/,?#-]+(\s+[0-9A-Za-z*/,?#-]+){4})$"
)


def _no_url_credentials(url: str) -> str:
    """A git URL may name a user (``ssh://git@host``) but carry no secret: it goes into the plan,
    XCom, labels and logs. Credentials for git belong in an Airflow connection (``git_conn_id``)."""
    found = _USERINFO_RE.match(url)
    if found and (":" in found["userinfo"] or url.lower().startswith(("http://", "https://"))):
        raise ValueError("must not contain credentials (user:password@ or token@ in an http(s) URL); "
                         "name an Airflow connection holding them in project.git_conn_id instead")
    return url


def _check_cron(value: str | None) -> str | None:
    if value is not None and not CRON_RE.match(value.strip()):
        raise ValueError("must be a cron expression of five fields (e.g. '0 2 * * *') or a preset such as "
                         "'@daily'")
    return value


class Project(_Strict):
    """The project being released and where its build inputs live in its source tree."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")]
    git_url: Annotated[str, Field(min_length=1)]

    _no_credentials = field_validator("git_url")(_no_url_credentials)
    # The Airflow connection whose login and password (a token) git sends to an http(s) remote.
    git_conn_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,250}$")] | None = None
    branch: Annotated[str, Field(pattern=r"^[A-Za-z0-9._/-]+$")] = "main"
    base_dockerfile: str
    base_inputs: tuple[str, ...] = ()
    dockerfile: str
    parent_image: Annotated[str, Field(min_length=1)]
    targets: Targets = Targets()
    build_args: dict[str, str] = {}

    _check_args = field_validator("build_args")(_check_build_args)

    @field_validator("base_dockerfile", "dockerfile", "base_inputs")
    @classmethod
    def _relative_paths(cls, value: str | tuple[str, ...]) -> str | tuple[str, ...]:
        for path in (value,) if isinstance(value, str) else value:
            if not path or path.startswith("/") or ".." in Path(path).parts:
                raise ValueError(f"{path!r} must be a path relative to the source tree, without '..'")
        return value


class Variant(_Strict):
    """One release flavour: a ROCm version, a Python version, GPU archs and a platform tag."""

    name: Annotated[str, Field(pattern=NAME_RE)]
    rocm_version: Annotated[str, Field(pattern=r"^[0-9]+\.[0-9]+(\.[0-9]+)?$")]
    python_version: Annotated[str, Field(pattern=r"^3\.[0-9]{1,2}$")]
    gpu_archs: Annotated[tuple[Annotated[str, Field(pattern=ARCH_RE)], ...], Field(min_length=1)]
    platform_tag: str
    parent_image: str | None = None
    build_args: dict[str, str] = {}

    _check_args = field_validator("build_args")(_check_build_args)

    @field_validator("platform_tag")
    @classmethod
    def _manylinux_tag(cls, value: str) -> str:
        # linux_<arch> is what the build writes and what pip refuses from an index: publishing re-tags
        # to this tag, after checking the wheels' glibc needs against it (adapters/wheel_platform.py).
        if not PLATFORM_TAG_RE.match(value):
            raise ValueError(f"{shown(value)} is not a manylinux tag: manylinux_<glibc major>_<minor>_<arch>, "
                             "arch x86_64 or aarch64 (e.g. manylinux_2_35_x86_64 for a glibc 2.35 build image)")
        return value


# Docker Hub's registry host and its other names; the Hub API (tag deletion) is at DOCKER_HUB_API.
DOCKER_HUB_HOSTS = frozenset({"docker.io", "registry-1.docker.io", "index.docker.io"})
DOCKER_HUB_API = "https://hub.docker.com"
_HUB_API_RE = r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?/?$"


class Registry(_Strict):
    """A container registry: ECR (through an AWS connection), Docker Hub, or any OCI Distribution registry.

    ``dockerhub``: the Registry API at ``host`` for everything but deleting tags, which goes through the
    Hub API at ``hub_api`` (default https://hub.docker.com; a test points it at a local stand-in). A
    registry whose host is Docker Hub's is a Docker Hub registry whatever ``kind`` says.
    """

    kind: Literal["ecr", "oci", "dockerhub"]
    host: Annotated[str, Field(pattern=r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?$")]
    repository: Annotated[str, Field(pattern=REPOSITORY_RE.pattern, max_length=REPOSITORY_MAX)]
    connection_id: str | None = None
    scheme: Literal["https", "http"] = "https"
    hub_api: Annotated[str, Field(pattern=_HUB_API_RE)] | None = None

    @property
    def is_docker_hub(self) -> bool:
        """Docker Hub by kind or by host: tags are deleted through the Hub API."""
        return self.kind == "dockerhub" or self.host.lower() in DOCKER_HUB_HOSTS

    @model_validator(mode="after")
    def _hub_fields(self) -> Registry:
        if self.hub_api is not None and not self.is_docker_hub:
            raise ValueError("hub_api is for Docker Hub only (kind: dockerhub, or a Docker Hub host)")
        if self.is_docker_hub and self.kind == "ecr":
            raise ValueError(f"{self.host} is Docker Hub, not ECR: use kind 'dockerhub' (or 'oci')")
        if self.is_docker_hub and self.repository.count("/") != 1:
            raise ValueError("a Docker Hub repository is '<namespace>/<name>' (one '/'), got "
                             f"{shown(self.repository)}")
        return self


class WheelStore(_Strict):
    """Where wheels and the PEP 503 index go: ``s3://bucket/prefix`` or ``file:///path``."""

    url: Annotated[str, Field(pattern=r"^(s3://[a-z0-9.-]{3,63}(/[^\s]*)?|file:///[^\s]*)$")]
    connection_id: str | None = None
    public_url: str | None = None


class Build(_Strict):
    """Where and how builds run: the Airflow queue and pool of the ROCm hosts, the build network, the daemon."""

    @model_validator(mode="before")
    @classmethod
    def _no_docker_conn_id(cls, data: object) -> object:
        if isinstance(data, dict) and "docker_conn_id" in data:
            raise ValueError("docker_conn_id is gone: the daemon is build.docker_url (e.g. "
                             "unix:///var/run/docker.sock; default: each worker's $DOCKER_HOST); a docker connection "
                             "is a registry login, as the docker provider defines it (smoke_test.docker_conn_id)")
        return data

    queue: Annotated[str, Field(min_length=1)] = "rocm"
    pool: Annotated[str, Field(min_length=1)] = "rocm_builders"
    network: Literal["default", "none", "host"] = "default"
    # The build host's docker daemon; None: the worker's $DOCKER_HOST (each host's own), else docker's default.
    docker_url: Annotated[str, Field(pattern=r"^(unix:///|tcp://|ssh://)[^\s]+$")] | None = None
    secrets: tuple[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")], ...] = ()
    timeout_minutes: Annotated[int, Field(ge=1, le=24 * 60)] = 360


class PublicTagPatterns(_Strict):
    """Tag patterns in the public registry. Placeholders: ``{variant}``, ``{commit}``."""

    nightly: str = "nightly-{variant}"
    nightly_commit: str = "nightly-{commit}-{variant}"
    base_nightly: str = "base-nightly-{variant}"
    base_nightly_commit: str = "base-nightly-{commit}-{variant}"

    @field_validator("nightly", "nightly_commit", "base_nightly", "base_nightly_commit")
    @classmethod
    def _valid_pattern(cls, value: str) -> str:
        fields = [f for _, f, _, _ in string.Formatter().parse(value) if f is not None]
        unknown = sorted(set(fields) - set(TAG_FIELDS))
        if unknown:
            raise ValueError(f"unknown placeholder(s) {unknown}; allowed: {sorted(TAG_FIELDS)}")
        if "variant" not in fields:
            raise ValueError("a public tag pattern must contain {variant}")
        rendered = value.format(**TAG_FIELDS)
        if not TAG_RE.match(rendered):
            raise ValueError(
                f"renders to {rendered!r}, not a valid OCI tag ([A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})"
            )
        return value

    @model_validator(mode="after")
    def _distinct(self) -> PublicTagPatterns:
        patterns = [self.nightly, self.nightly_commit, self.base_nightly, self.base_nightly_commit]
        if len(set(patterns)) != len(patterns):
            raise ValueError("the four public tag patterns must differ")
        if "{commit}" in self.nightly or "{commit}" in self.base_nightly:
            raise ValueError("the nightly aliases (nightly, base_nightly) must not contain {commit}")
        if "{commit}" not in self.nightly_commit or "{commit}" not in self.base_nightly_commit:
            raise ValueError("nightly_commit and base_nightly_commit must contain {commit}")
        return self


class Retention(_Strict):
    """How many commits' per-commit tags and wheel folders the weekly retention keeps, and for how long
    anything just pushed is safe from it (hours; a run in progress may still be using it)."""

    keep_commits: Annotated[int, Field(ge=1, le=10_000)] = 14
    schedule: str = "0 4 * * 0"
    protect_recent_hours: Annotated[int, Field(ge=0, le=24 * 365)] = 48

    _cron = field_validator("schedule")(_check_cron)


class Sensors(_Strict):
    """How the artifact sensors wait through outages (seconds; a day at most between pokes, a week in all)."""

    poke_interval: Annotated[int, Field(ge=1, le=DAY)] = 30
    max_wait: Annotated[int, Field(ge=1, le=DAY)] = 600
    timeout: Annotated[int, Field(ge=1, le=7 * DAY)] = 3600


class Retry(_Strict):
    """How long each push, copy and upload is retried inside its task through transient errors (seconds).

    ``window_seconds`` is per operation (one ``docker push``, one image copy or tag, one wheel upload):
    a registry or store outage shorter than it costs a wait, not the build. 0 turns retrying off.
    """

    window_seconds: Annotated[int, Field(ge=0, le=6 * 60 * 60)] = DEFAULT_WINDOW_SECONDS
    first_delay_seconds: Annotated[int, Field(ge=1, le=600)] = DEFAULT_FIRST_DELAY_SECONDS
    max_delay_seconds: Annotated[int, Field(ge=1, le=3600)] = DEFAULT_MAX_DELAY_SECONDS

    @model_validator(mode="after")
    def _ordered(self) -> Retry:
        if self.first_delay_seconds > self.max_delay_seconds:
            raise ValueError(f"first_delay_seconds ({self.first_delay_seconds}) must not exceed "
                             f"max_delay_seconds ({self.max_delay_seconds})")
        return self

    def retrying(self, log: Callable[[str], None]) -> Retrying:
        """The policy, logging each failed attempt to ``log``."""
        return Retrying(window_seconds=self.window_seconds, first_delay_seconds=self.first_delay_seconds,
                        max_delay_seconds=self.max_delay_seconds, log=log)


DEVICE_RE = r"^/dev/[A-Za-z0-9_./-]+(:/dev/[A-Za-z0-9_./-]+)?(:[rwm]{1,3})?$"
ENV_NAME_RE = r"^[A-Za-z_][A-Za-z0-9_]*$"


class SmokeTest(_Strict):
    """The gate before anything public moves (``test_release_image``, ``test_wheels``), on the ROCm pool.

    ``command`` runs in the release image, pulled by digest, network off, with the ``devices`` (e.g.
    ``/dev/kfd``, ``/dev/dri``), ``group_add`` (e.g. ``video``, ``render``), ``shm_size_mb`` and
    ``environment`` given. ``imports`` are the modules ``test_wheels`` imports after installing the
    project's and the base's wheels (pip, no index) into a clean container of the parent image.
    ``docker_conn_id``: an Airflow ``docker`` connection (the provider's: registry host, login, password)
    that the provider's DockerHook logs in with before pulling; none for a registry without login.
    """

    command: Annotated[tuple[Annotated[str, Field(min_length=1)], ...], Field(min_length=1)]
    imports: tuple[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")], ...] = ()
    devices: tuple[Annotated[str, Field(pattern=DEVICE_RE)], ...] = ()
    group_add: tuple[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")], ...] = ()
    shm_size_mb: Annotated[int, Field(ge=1, le=1024 * 1024)] | None = None
    environment: dict[Annotated[str, Field(pattern=ENV_NAME_RE)], str] = {}
    docker_conn_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,250}$")] | None = None
    timeout_minutes: Annotated[int, Field(ge=1, le=24 * 60)] = 30


CONN_ID = Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,250}$")]
EMAIL = Annotated[str, Field(pattern=r"^[^@\s,;<>]+@[^@\s,;<>]+$")]


class EmailAlerts(_Strict):
    """Alerts by e-mail through the SMTP provider's notifier; the server and login are the connection's."""

    smtp_conn_id: CONN_ID
    to: Annotated[tuple[EMAIL, ...], Field(min_length=1)]
    # Required: the notifier refuses to send without one (the deadline's mail, sent by the triggerer, too).
    from_email: EMAIL


class SlackAlerts(_Strict):
    """Alerts to a Slack channel (needs apache-airflow-providers-slack installed; its connection holds the token)."""

    slack_conn_id: CONN_ID
    channel: Annotated[str, Field(pattern=r"^[#@]?[A-Za-z0-9._-]{1,80}$")]


class Alerts(_Strict):
    """Who hears about a failed night, a recovered one, and a night not finished ``deadline_minutes`` after it
    was queued (Airflow's deadline alerts). Dry runs never alert."""

    email: EmailAlerts | None = None
    slack: SlackAlerts | None = None
    deadline_minutes: Annotated[int, Field(ge=1, le=7 * 24 * 60)] | None = None

    @model_validator(mode="after")
    def _somewhere(self) -> Alerts:
        if self.email is None and self.slack is None:
            raise ValueError("alerts needs a destination: email (smtp_conn_id, to) or slack (slack_conn_id, channel)")
        return self


class ReleaseConfig(_Strict):
    """The whole release configuration."""

    project: Project
    variants: Annotated[tuple[Variant, ...], Field(min_length=1)]
    cache_registry: Registry
    public_registry: Registry
    wheel_store: WheelStore
    build: Build = Build()
    schedule: str | None = "0 2 * * *"

    _cron = field_validator("schedule")(_check_cron)
    public_tags: PublicTagPatterns = PublicTagPatterns()
    retention: Retention = Retention()
    sensors: Sensors = Sensors()
    retry: Retry = Retry()
    # None: the gate tasks skip, saying so (an ungated release); every shipped config has one.
    smoke_test: SmokeTest | None = None
    alerts: Alerts | None = None

    @field_validator("variants")
    @classmethod
    def _unique_variants(cls, value: tuple[Variant, ...]) -> tuple[Variant, ...]:
        names = [v.name for v in value]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"variant names must be unique; repeated: {dupes}")
        return value

    def variant(self, name: str) -> Variant:
        """The variant called ``name``; KeyError naming the allowed ones otherwise."""
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(f"unknown variant {name!r}; configured: {[v.name for v in self.variants]}")


def _describe(error: ValidationError) -> str:
    lines = []
    for e in error.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        value = e.get("input")
        value = redact(value) if isinstance(value, str) else value  # a rejected URL's secret is not echoed
        if e["type"] == "extra_forbidden":
            lines.append(f"  {where}: unknown key (value {shown(value)}); check the spelling")
        else:
            lines.append(f"  {where}: {e['msg']} (got {shown(value)})")
    return "\n".join(lines)


def _expand_repo_root(value: object, root: str) -> object:
    """Replace the literal ``${REPO_ROOT}`` in every string (the demo config's local paths)."""
    if isinstance(value, str):
        return value.replace("${REPO_ROOT}", root)
    if isinstance(value, dict):
        return {k: _expand_repo_root(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_repo_root(v, root) for v in value]
    return value


# libyaml's loader when PyYAML has it: the same safe constructors, about ten times faster (the DAG files
# read the config on every parse).
_FAST_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _load_yaml(text: str, source: str) -> object:
    """The YAML document; on an error, the pure-Python loader's message, which quotes the bad line."""
    try:
        return yaml.load(text, Loader=_FAST_SAFE_LOADER)  # noqa: S506 - a safe loader
    except yaml.YAMLError:
        pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc


def parse_config(text: str, source: str = "<string>", *, repo_root: str | None = None) -> ReleaseConfig:
    """Validate YAML text into a ReleaseConfig, or raise ConfigError naming ``source`` and each field.

    ``repo_root`` replaces ``${REPO_ROOT}`` in strings (the demo config's local paths)."""
    data = _load_yaml(text, source)
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping, got {type(data).__name__}")
    if repo_root is not None:
        data = _expand_repo_root(data, repo_root)
    try:
        return ReleaseConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: invalid release config:\n{_describe(exc)}") from exc
