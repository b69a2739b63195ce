"""Benchmarks behind `qianbao bench …`; each measures its own baseline in the same run."""
