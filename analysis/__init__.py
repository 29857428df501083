"""Turns finished runs into tables and figures. Reads files only (and conf/method/*.yaml for how methods are shown);
imports nothing of pipelines or baselines except, lazily, the git-commit helper (analysis.report.git_sha).

Modules, each importing only those above it: names (method display names, colours, order), intervals (t-intervals
across seeds), stats (fronts and paired comparisons), load (run folders -> DataFrames), report (summary.md
sections), cost, winrate, frontier (the commands).
"""
