"""Throughput benchmark of the EST gateway against the crypto ceiling of this machine.

Run ``.venv/bin/python -m bench`` (``--quick`` for a one-minute run, ``--help`` for the
knobs). It starts its own gateway processes on free loopback ports, prints a table and
writes JSON and a PNG plot to ``bench/results/``. A benchmark, never a test: nothing
here asserts a timing.
"""
