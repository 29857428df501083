"""One file per pipeline stage; each has run(cfg, out_dir) -> dict (see pipelines/run.py STAGES)."""
