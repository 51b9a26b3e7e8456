"""Analysis of a results directory, one module per concern.

* :mod:`~research.analysis.results`: loading a results directory into a per-trial summary,
  statistics over repeats.
* :mod:`~research.analysis.metrics`: per-trial metrics from one trial's task records.
* :mod:`~research.analysis.models`: schedule models (blocks, greedy, chunks, round robin,
  joblib batching, lower bound) and the table giving every scheduler its model.
* :mod:`~research.analysis.claims`: the talk's claims as a table of rows, and their checks.
* :mod:`~research.analysis.figures`: timelines and summary figures, chosen through a registry.
* :mod:`~research.analysis.report`: the HTML (Jinja2 template) and markdown report.
* :mod:`~research.analysis.headline`: a report's verdicts in three lines, from its CSVs.
* :mod:`~research.analysis.trace`: Chrome trace-event export for Perfetto.

Import the submodule you need; this package imports nothing heavy itself.
"""
