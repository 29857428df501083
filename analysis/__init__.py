"""Turns finished runs into tables and figures. Reads files only; never imports pipelines or baselines."""
