"""Activity streams (seed 000): opt-in, 24-hour entries, similarity, match notifications."""
