"""Watching-now counts and content counters."""
