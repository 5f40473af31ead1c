"""This repository's own tasks: deploykit's, plus `bench` for benchmarks."""
from deploykit.tasks import ns  # noqa: F401
