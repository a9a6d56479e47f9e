"""The HoliTom merge algorithms (DESIGN.md section 2): pure functions that return plans, applied in a separate step."""
