"""The read side: lead profiles, lists, the funnel, the sales queue."""
