"""The Airflow layer: operators per DAG, the sensors, Params and the XCom hand-off.

Each ``execute`` reads its inputs (the plan and upstream XComs), calls one core or adapter
function and returns the XCom; the error policy (``tasks.policy``) decides fail-now vs retry.
"""
