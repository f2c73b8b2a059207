"""Adapters: the outside world behind small clients (registries, wheel store, docker builds, git),
and the steps that combine them, one function per task. They import the core, never Airflow's task layer.
"""
