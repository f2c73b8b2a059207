"""The release summary where people look: on each night's DAG run, as its note (the UI shows it on the run).

A task cannot set its run's note in Airflow 3.3 (the execution API has no such call), so ``release_summary``
hands the note on as XCom ``note`` and this listener, a plugin registered through the ``airflow.plugins``
entry point, copies it onto the run when the run ends (``on_dag_run_success`` / ``on_dag_run_failed``, called
where the run's state changes: the scheduler, or ``airflow dags test``), in the same database session. A note a
user wrote already is kept. Nothing here may fail a run: Airflow logs a listener's exception and goes on.
"""

from __future__ import annotations

from typing import Any

from airflow.listeners import hookimpl
from airflow.plugins_manager import AirflowPlugin

from rocm_release.core.task_ids import NIGHTLY_DAG_ID, RELEASE_SUMMARY, XCOM_NOTE


def note_of(session: Any, dag_run_id: int) -> str | None:
    """The note ``release_summary`` handed on for this run (None when it did not get that far)."""
    from airflow.models.xcom import XComModel
    from sqlalchemy import select

    row = session.scalars(select(XComModel).where(
        XComModel.dag_run_id == dag_run_id, XComModel.task_id == RELEASE_SUMMARY, XComModel.key == XCOM_NOTE,
        XComModel.map_index == -1)).first()
    value = XComModel.deserialize_value(row) if row is not None else None
    return value if isinstance(value, str) else None


def put_note(session: Any, dag_run: Any) -> None:
    """The release summary's note on the run, in ``session``, unless the run has a note already."""
    if dag_run.dag_id != NIGHTLY_DAG_ID or dag_run.note:
        return
    note = note_of(session, dag_run.id)
    if note:
        dag_run.note = note


class RunNoteListener:
    """Puts the release summary's note on a finished ``rocm_nightly_release`` run.

    The scheduler calls the hook with the run bound to its own session (and the run's row locked in it): the
    note goes into that session, committed with the state change; a second session would wait for that lock.
    ``airflow dags test`` calls it with the run detached: the note gets a short session of its own."""

    @hookimpl
    def on_dag_run_success(self, dag_run: Any, msg: str) -> None:
        self._note(dag_run)

    @hookimpl
    def on_dag_run_failed(self, dag_run: Any, msg: str) -> None:
        self._note(dag_run)

    @staticmethod
    def _note(dag_run: Any) -> None:
        if dag_run.dag_id != NIGHTLY_DAG_ID:
            return
        from sqlalchemy.orm import object_session

        session = object_session(dag_run)
        if session is not None:
            put_note(session, dag_run)
            return
        from airflow.models.dagrun import DagRun
        from airflow.utils.session import create_session

        with create_session() as own:
            attached = own.get(DagRun, dag_run.id)
            if attached is not None:
                put_note(own, attached)


class RocmReleasePlugin(AirflowPlugin):
    """rocm-nightly's plugin: the run-note listener."""

    name = "rocm_release"
    listeners = [RunNoteListener()]  # noqa: RUF012 - AirflowPlugin's own attribute
