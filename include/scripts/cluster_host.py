"""The hostname a cluster worker reports to Airflow: ``[core] hostname_callable = cluster_host.hostname``.

Every worker of `make cluster-up` runs on this one machine, where ``socket.getfqdn()`` is the same
for all of them; each stands for a host of its own (``ROCM_NIGHTLY_HOSTNAME``: ``airflow-worker``,
``rocm-host-a``, ``rocm-host-b``), and a task instance's ``hostname`` says which one ran it. On real
hosts leave ``hostname_callable`` at Airflow's default.
"""

from __future__ import annotations

import os
import socket

HOSTNAME_ENV = "ROCM_NIGHTLY_HOSTNAME"


def hostname() -> str:
    """``$ROCM_NIGHTLY_HOSTNAME``, else this machine's fully qualified name."""
    return os.environ.get(HOSTNAME_ENV) or socket.getfqdn()
