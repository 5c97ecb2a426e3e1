"""Use cases: one function each, one unit of work each; the CLI, the API and the worker call them."""
