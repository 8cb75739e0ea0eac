"""Run records, the low layer: run ids, run folders, atomic writing, integrity checks, reading and writing records.

``data/``, ``training/`` and the runner import this package; the analysis and rendering above it (``results/``)
only read what it wrote."""
