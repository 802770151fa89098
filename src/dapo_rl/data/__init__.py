"""Datasets, the built-in arithmetic task, prompt templates and the prompt stream."""
