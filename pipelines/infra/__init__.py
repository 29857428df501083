"""Infrastructure: skip/resume bookkeeping, files, provenance, device, processes, cost meter, tracking."""
