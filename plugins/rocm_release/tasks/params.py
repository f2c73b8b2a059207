"""The DAGs' Params: JSON-schema forms in the trigger UI, validated again in the worker (``core.params``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk import Asset, Param

from rocm_release.core.names import COMMITISH_RE, COMMITISH_RULE

if TYPE_CHECKING:
    from rocm_release.core.config import ReleaseConfig


def release_params(config: ReleaseConfig) -> dict[str, Param]:
    """Params for manual triggers; the defaults are what a scheduled run uses."""
    names = [v.name for v in config.variants]
    return {
        # A bad value is refused by the API (400) with jsonschema's message, which the trigger dialog shows
        # as it is: "'x' does not match '<regex>'", then the schema holding the failed keyword. jsonschema
        # has no custom messages, so the pattern sits in a sub-schema of its own whose description says
        # the rule in words: the refusal prints that small schema, words first, instead of the field's.
        "commit": Param(
            None,
            type=["null", "string"],
            allOf=[{"description": f"must be {COMMITISH_RULE}", "pattern": COMMITISH_RE.pattern}],
            title="Commit",
            description=f"{COMMITISH_RULE[0].upper()}{COMMITISH_RULE[1:]}. Empty: the branch tip now (manual runs).",
        ),
        # The UI shows a multi-select for an array Param only with a top-level `examples` or `enum`
        # (airflow/ui/src/components/FlexibleForm/FieldSelector.tsx, isFieldMultiSelect; installed as
        # airflow/ui/dist/assets/index-*.js); without them, a free-text box of one name per line.
        # `items.enum` is what validation allows; `examples` is what the UI offers.
        "variants": Param(
            names,
            type="array",
            items={"type": "string", "enum": names},
            examples=names,
            minItems=1,
            uniqueItems=True,
            title="Variants",
            description=f"Which variants to release. Configured: {', '.join(names)}.",
        ),
        "force_rebuild": Param(
            False, type="boolean", title="Force rebuild",
            description="Treat every cached artifact as absent: rebuild base, wheels and release image.",
        ),
        "promote": Param(
            False, type="boolean", title="Promote to nightly",
            description="Manual runs only: move the nightly aliases (only ever forwards). Only a commit on "
            "the release branch is promoted; another branch's commit is published per commit only. "
            "Scheduled runs always promote; backfills never do.",
        ),
        "dry_run": Param(
            False, type="boolean", title="Dry run",
            description="Observe and plan only: print the plan and every command; build, push and upload nothing.",
        ),
        "skip_tests": Param(
            False, type="boolean", title="Skip the smoke tests (emergency)",
            description="Manual runs only: publish without test_release_image and test_wheels. Logged as a "
            "warning and written into the release summary. Scheduled runs and backfills refuse it.",
        ),
    }


def variant_assets(variant: str) -> dict[str, Asset]:
    """The Assets a variant's publication updates: its public images and its wheel index.

    Downstream DAGs schedule on them (``schedule=[asset]``); each event's extra
    names the commit, the public image references or the index URL. They are
    named, without a URI scheme: an ``s3://``/``file://`` URI makes Airflow load
    every provider's URI handler (boto3 among them) while parsing the DAG.
    """
    return {
        "images": Asset(name=f"rocm_nightly.{variant}.images"),
        "wheels": Asset(name=f"rocm_nightly.{variant}.wheels"),
    }


def retention_params(config: ReleaseConfig) -> dict[str, Param]:
    """Params of the trigger form. Their defaults apply to manual runs only: a scheduled run deletes."""
    return {
        "dry_run": Param(
            True, type="boolean", title="Dry run",
            description="Manual runs: print what would be deleted and kept, and why; delete nothing. "
            "Untick (or pass dry_run=false) to delete. Scheduled runs always delete.",
        ),
        "keep_commits": Param(
            None, type=["null", "integer"], minimum=1, maximum=10_000, title="Commits to keep",
            description=f"How many of the newest commits (by push time) to keep. "
            f"Empty: the config's retention.keep_commits ({config.retention.keep_commits}).",
        ),
    }
