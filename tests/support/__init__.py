"""Helpers shared by the tests and the benchmarks (bench/ imports them too); no tests here.

* ``services``: where the local services of ``make services-up`` listen (``.state/services.env``);
* ``net``: free/closed 127.0.0.1 ports, a small threaded HTTP server, waiting for a port;
* ``registries``: throwaway ``docker-registry`` processes, their access logs, images pushed over plain HTTP,
  a token issuer, removing a repository's tags;
* ``moto``: a moto server of a module's own, moto's ECR account/region, Airflow AWS connections to moto;
* ``ecr``: ECR scenes on moto: hand-made images, PutImage, the blob server behind GetDownloadUrlForLayer;
* ``wheels``: real, deterministic wheels;
* ``retention_history``: a nightly history in two registries and a store, what retention must leave, a run;
* ``dockerhub``: a stand-in for the Docker Hub API (login, delete a tag) over a throwaway registry;
* ``airflow_runs``: nightly runs (and their XComs) made in an Airflow home's database, as the scheduler makes them;
* ``dockerd``: a private, empty ``dockerd``;
* ``gates``: a TCP gate (down, cut mid-request, hold a request) and an HTTP proxy (503s, other bytes) in front of
  a real server, for the fault matrix;
* ``demo``: the demo config and git history, Airflow homes and ``airflow dags test`` runs;
* ``airflow_api``: a running Airflow's REST API (login, runs, task instances, XComs, logs) and ``wait_for``;
* ``airflow_world``: the DAG under Airflow's own services (scheduler, dag-processor, triggerer, api-server) in a
  world of a module's own (tests/e2e/test_scheduler.py, tests/browser/).
"""
