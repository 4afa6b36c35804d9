"""Live chat on /live: messages, history, slow mode, moderation and reaction bursts."""
