"""Benchmarks (`make bench`) and fault drills (`make drills`) against the local topology.

    python -m bench [SECTION ...]     converge realtime http backups (default: all), then the report
    python -m bench report            rewrite docs/BENCHMARKS.md from the last results
    python -m bench.drills [DRILL ...]  apply-kill reboot stop-storage backup-disk-full

Every figure is stored with how it was measured (.lab/bench/results.json, git-ignored)
and docs/BENCHMARKS.md / docs/DRILLS.md are written from those records.
"""
