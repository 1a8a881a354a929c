"""kvdist-bench: layer-wise KV-cache pushes between real processes, with baselines.

Run ``kvdist-bench --help``. The hot loop (puts, completion, notes) is
libkvdist's C++; this package spawns the processes, builds the cases and
reports figures.
"""
