"""History across commits (python -m bench history, bisect): a store of runs per machine, each case's series in
first-parent order, its steps, a trend page, and a bisect that names the commit behind a step."""
