"""The run folder on disk, pure I/O: atomic writes, checkpoints, locks, which runs belong to a
comparison, and reading the run folders below a folder (`scan.scan_runs`)."""
