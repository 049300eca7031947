"""Seeded procedural worlds (CATER-, ACRE-style) with full ground truth, so the system runs offline."""
