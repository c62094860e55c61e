"""Throughput benchmarks: our train step against a PyTorch peer (benchmarks/throughput.py)."""
