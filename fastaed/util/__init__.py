"""Small helpers every stage shares: plain-text tables and percentages (``tables``, no third-party import),
devices, synchronisation and the precision rule (``devices``, torch only)."""
