"""The grammar facts, written once: OCI tag, repository and digest syntax, commit names, media types.

Config validation, the plan, the registry clients and retention all use these; none keeps a copy.
Source: the OCI distribution spec (https://github.com/opencontainers/distribution-spec/blob/main/spec.md
"Pulling manifests") and the image spec's media types. ASCII only: ``\\w`` would accept ``ñightly``.
"""

from __future__ import annotations

import re

# An OCI tag: [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}.
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
# A repository name: path components joined by "/" (at most 255 characters in all).
REPOSITORY_RE = re.compile(rf"^{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*$")
REPOSITORY_MAX = 255
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
# A full git commit SHA (the plan always carries one).
SHA_RE = re.compile(r"^[0-9a-f]{40}$")
# What a manual run may name: a full or abbreviated SHA, or a ref (branch/tag) name.
COMMITISH_RE = re.compile(r"^(?!-)(?!.*\.\.)(?!.*//)[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")
# COMMITISH_RE in words, for people: the trigger form and every refusal of a commit Param say this.
COMMITISH_RULE = (
    "a commit SHA (7-40 hex digits) or a branch/tag name: up to 200 letters, digits, '.', '_', '/' or '-', "
    "starting with a letter or digit, without '..' or '//'"
)

# Manifest media types a reader must accept (Docker v2 and OCI, single images and indexes).
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST_MEDIA_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX, DOCKER_MANIFEST_LIST)
INDEX_MEDIA_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
IMAGE_MEDIA_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})

# The userinfo of a URL (``scheme://user:password@host/…``): up to the *last* "@" before the path,
# since a raw "@" may appear in a password.
_CREDENTIALS_RE = re.compile(r"(?<=://)[^/?#\s]*@")


def redact(url: str) -> str:
    """The URL without any ``user:password@`` part, fit for logs, labels and error messages."""
    return _CREDENTIALS_RE.sub("***@", url)


# Checks for a name before it goes into a URL path or an API call: the name itself, or ValueError.


def check_repository(repository: str) -> str:
    """The repository name, or ValueError naming the grammar it breaks."""
    if not REPOSITORY_RE.fullmatch(repository) or len(repository) > REPOSITORY_MAX:
        raise ValueError(
            f"repository name {repository!r} is not valid: lower-case components "
            f"[a-z0-9] separated by '.', '_', '__' or '-', joined by '/'"
        )
    return repository


def check_reference(reference: str) -> str:
    """A tag or a sha256 digest, or ValueError."""
    if DIGEST_RE.fullmatch(reference) or TAG_RE.fullmatch(reference):
        return reference
    raise ValueError(
        f"reference {reference!r} is neither a tag ([A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}) nor sha256:<64 hex>"
    )


def check_tag(tag: str) -> str:
    """A tag (not a digest), or ValueError."""
    if not TAG_RE.fullmatch(tag):
        raise ValueError(f"tag {tag!r} is not valid: [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}")
    return tag


def check_digest(digest: str) -> str:
    """A sha256 digest, or ValueError."""
    if not DIGEST_RE.fullmatch(digest):
        raise ValueError(f"digest {digest!r} is not sha256:<64 lower-case hex>")
    return digest
