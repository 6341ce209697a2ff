"""Config primitives shared by the agent's and the receiver's config (no models of their own)."""
