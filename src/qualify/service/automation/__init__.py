"""Automation: segments, workflow definitions, enrolment and the steps the worker runs.

The modules, each importing only those listed before it:

- `history`: the segment history and the workflow log, and ending a run; written by all the rest;
- `definitions`: the segments and active workflows (parsed once per version), and their editing;
- `facts`: what the tests know about a lead, read from the store;
- `enrolment`: workflow triggers and enrolment, and the `workflows` reaction;
- `segments`: membership, tested online (the `segments` reaction) and in batch (refreshes);
- `reading`: segments, workflows and a lead's automation, as people see them;
- `lead_data`: automation's keeper for merges and erasures;
- `runs`: the steps the worker runs.

Callers import a name from the module that holds it: this package re-exports nothing.
"""
