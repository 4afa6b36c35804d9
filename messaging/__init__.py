"""Direct messages, circles, HOURS tips and scheduled notes (namespace /messages)."""
