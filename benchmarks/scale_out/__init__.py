"""Scale-out: the Redis-mode cluster against the embedded default, same shoppers, same seed."""
