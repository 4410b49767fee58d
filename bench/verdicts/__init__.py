"""Verdicts on results: the regression gate, paired A/B runs, the turn-taking referee and cross-machine comparison.
Imports no torch."""
