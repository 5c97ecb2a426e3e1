"""The lead lifecycle: leads, events, people's stage actions, rescoring, hand-off to sales, merges and erasure."""
