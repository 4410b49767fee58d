"""What a run leaves: results.csv's rows and the run folder's named files. Imports no torch."""
