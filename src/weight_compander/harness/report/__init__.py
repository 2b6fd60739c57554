"""report.md and its figures from finished runs: statistics, tables, plots, and the
robustness and mechanism sections."""

from weight_compander.harness.report.stats import mean_std, paired_difference, summarize
from weight_compander.harness.report.tables import markdown_tables
from weight_compander.harness.report.write import write_report

__all__ = ["markdown_tables", "mean_std", "paired_difference", "summarize", "write_report"]
