"""Workloads: synthetic spaces (``generator``), the real-bug layouts (``layouts``), sweeps
(``experiment``), the regression corpus (``corpus``), the demo, and plots."""
