"""Predictive scoring in the store: stored models, activation, each lead's probability."""
