"""Cost model: MACs/params counting, latency and memory prediction per target, host measurement."""
