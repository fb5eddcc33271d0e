"""wavekit's benchmarks: `python -m benchmarks.run [--quick]` from the repo root."""
