"""A user's data: export everything of theirs, erase everything of theirs."""
