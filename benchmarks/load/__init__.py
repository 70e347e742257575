"""Load benchmark: Tailor against an echo gRPC server of the same server type, same traffic, same run."""
