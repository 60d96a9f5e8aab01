"""`python -m bench [--quick] [--json PATH] [--markdown]`: run the benchmark."""

from bench.runner import main

main()
