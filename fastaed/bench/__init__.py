"""Stage 6: measurement only. Each benchmark prints a table, writes JSON, and compares with its anchor."""
