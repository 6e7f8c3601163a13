"""Reporting: run directories in, tables, figures and verdicts on the paper's claims out.

``summary.json`` and ``history.csv`` of each run (read by ``gradnorm.run_record``) are the only input
(docs/architecture.md). One module per paper figure or table (``figure2``, ``figure3``, ``figure4``,
``figure5``, ``figure7``, ``table1``), ``sensitivity`` (the toy's unstated choices), ``methods`` (the later
methods on the toy) and ``multimnist`` (GradNorm on real data); ``build`` runs
the report an experiment names; ``reference`` compares a report with the one it replaces; ``stats``
grades every comparison (paired by seed, beyond the machine-to-machine drift); ``archive`` keeps the
runs with their results.
"""
