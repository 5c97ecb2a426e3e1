"""Web tracking: anonymous visitors, their page views, and stitching them onto leads."""
