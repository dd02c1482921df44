"""Experiment tracking: the links the launcher keeps for the report (``links``) and the built-in MLflow tracker
(``mlflow_tracker``). The records the lifecycle hooks get are plugin contracts (:mod:`imgbench.specs`); the
launcher calls the hooks through :mod:`imgbench.runner.lifecycle`.
"""
