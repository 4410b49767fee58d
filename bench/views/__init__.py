"""Views of a run: report.html and summary.md, trace pages, plots. Imports no torch."""
