"""Test-run settings shared by tests/ and notebooks/ (run by nbmake)."""
import os

# Notebooks read FAST=1 to train on a few batches; their kernels inherit this environment.
os.environ.setdefault("FAST", "1")
