"""The reports: the per-norm report page, the norms-comparison page with its paper tables, and
the figures they embed. One job per module:

- :mod:`~cilaudio.reporting.statistics`: the numbers of the comparison (per seed, over seeds,
  backward transfer, CKA per layer kind, rankings that hold);
- :mod:`~cilaudio.reporting.findings`: the findings of both pages in plain language;
- :mod:`~cilaudio.reporting.texts`: the fixed texts (norm names, protocol notes, captions);
- :mod:`~cilaudio.reporting.html`: HTML building blocks (page head, tables, cells, figures);
- :mod:`~cilaudio.reporting.provenance`: code and package versions, setup, warnings, configuration;
- :mod:`~cilaudio.reporting.norm_report`: the per-norm report page;
- :mod:`~cilaudio.reporting.comparison_page`: the norms-comparison page (the workflow's step);
- :mod:`~cilaudio.reporting.paper_tables`: the comparison as LaTeX and Markdown tables;
- :mod:`~cilaudio.reporting.cka_files`: reading the CKA files, naming layer kinds;
- :mod:`~cilaudio.reporting.plots`: the figures (matplotlib).
"""
