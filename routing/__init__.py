"""Notification router: preferences, priorities, quiet hours, digests and channels."""
