"""The pure core: config, plan, decision, promotion rules, retention planning, report, index, build commands.

No I/O and no Airflow: nothing here imports airflow, httpx, boto3, docker or subprocess
(import-linter enforces it). Everything is a function of typed values, tested without services.
"""
