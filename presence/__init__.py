"""Presence: who is online, with a grace period, on /presence."""
