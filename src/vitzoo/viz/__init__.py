"""Pictures: attention maps (rollout) and training curves, drawn with matplotlib."""
