"""The pure domain of Qualify: leads, events, the scoring model and the lifecycle.

Nothing under this package does I/O or imports a framework; the service layer
feeds it plain values and stores what it returns.
"""
