"""The job record: one job's executed notebook, beside the files the engine writes into its folder.

- :mod:`.child` is the job process (``python -m imgbench.jobrecord.child``) that the grid's supervisor
  (:mod:`imgbench.runner.execute`) starts in the job folder: it executes ``notebooks/benchmark.ipynb`` with
  papermill and records how that ended.
- :mod:`imgbench.kernel` is the Jupyter kernel it runs in: this very Python, over ipc sockets (the report
  notebook runs in the same kind of kernel, so it lives below both).
- :mod:`.display` is what the notebook shows, kept out of its cells.

Only the job process and its kernel import it.
"""
