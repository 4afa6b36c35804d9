"""Media control plane: LiveKit audio rooms and Cloudflare Stream."""
