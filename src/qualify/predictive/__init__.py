"""Predictive scoring: point-in-time training sets, calibrated models, their metrics and explanations."""
