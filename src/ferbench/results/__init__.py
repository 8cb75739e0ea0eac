"""Analysis and rendering over run records (``ferbench.records``): cells, statistics, claims, tables, reports,
figures. Nothing here writes a run's record; everything here reads them."""
