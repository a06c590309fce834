"""apiguard's benchmarks: `python -m benchmarks [suite ...]` (or `make bench`)."""
