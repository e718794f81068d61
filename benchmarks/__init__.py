"""Side-by-side benchmarks against named peers; run one with `python -m benchmarks NAME`."""
