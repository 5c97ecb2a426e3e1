"""Automation: segments, workflow definitions, enrolment and the steps the worker runs."""
