"""Benchmarks for issue 7 (admin at scale, sync tick, archive streaming, pipeline)."""
