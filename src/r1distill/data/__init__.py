"""Problem sources: seeded synthetic word problems and loaders for files, benchmarks, hub datasets."""
