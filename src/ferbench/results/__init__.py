"""Run records (the truth), aggregation, tables and statistics (views over records)."""
