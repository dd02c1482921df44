"""Experiment tracking: the records the lifecycle hooks get (``records``), how the launcher calls the hooks
(``lifecycle``), the links it keeps for the report (``links``) and the built-in MLflow tracker (``mlflow_tracker``).

Nothing here is imported by the package itself: ``records`` is imported by the hook specifications, so it
must stay light and import no other part of imgbench but the schema.
"""
