"""Training, by role: the seam (``fold.py``), the rules every loop shares (``rules.py``), the Lightning loop
(``lightning/``), the packed loop (``packed/``), the detection task's pieces (``detection/``), and what the loops
share (process settings, optimisers, losses, metrics, mix-up, warm starts, loggers, resume)."""
