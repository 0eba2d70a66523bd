"""HTML reports of datasets, models and evaluations, built from what the steps wrote.

``write_report(target, out)`` reads a dataset, a model folder or an evaluation folder and
writes ``out/index.html`` with its case pages and assets; it never trains or predicts.
"""

from voxseg.report.build import write_report
from voxseg.report.sources import Sources, collect

__all__ = ["Sources", "collect", "write_report"]
