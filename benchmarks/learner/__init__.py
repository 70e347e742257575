"""Learner throughput: the in-process learner against raw VW learn on the same examples."""
