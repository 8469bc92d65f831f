"""Speed benchmarks: our JAX adversarial training step against PyTorch eager (see BENCHMARKS.md)."""
