"""Test-wide settings."""
import os

# `host` is the shipped profile in tests: a calibration of whatever CPU runs them would make predictions,
# budgets and the selections they drive differ from machine to machine (tests/test_host_calibration.py
# turns it on where it is the subject).
os.environ["AUTOPRUNE_EDGE_HOST_PROFILE"] = "shipped"
