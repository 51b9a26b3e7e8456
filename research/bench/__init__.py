"""Benchmarks that are not studies: the talk's own timeit prime benchmark
(:mod:`~research.bench.talkbench`) and the harness overhead benchmark
(:mod:`~research.bench.overhead`)."""
