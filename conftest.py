"""Nothing here: the sweep's pytest hooks are archbench's plugin (bench/run/plugin.py), which pytest loads
through the package's entry point, so an installed archbench runs its sweep outside this checkout too."""
