"""What session context costs: Decide handler time with and without session features, and events/s."""
