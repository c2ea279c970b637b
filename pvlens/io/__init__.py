"""Files pvlens writes and reads: resumable JSONL logs, plots and reports."""
