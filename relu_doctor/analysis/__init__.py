"""Analyses over reports: timelines of a training run."""
