"""The concepts everything else builds on: steps, plans and presets, dtypes, group specs, site statuses."""
