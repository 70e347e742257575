"""Tools for developers and benchmarks, apart from serving code: they drive Tailor from outside.

- `launcher`: `tailor serve` / `tailor learn` / `redis-server` as child processes on free ports.
- `simulator`: `tailor simulate`, synthetic shoppers with hidden intents against honest baselines.
- `cluster`: `tailor cluster`, a local Redis-mode deployment under the simulator.
- `catalog_apply`: `tailor catalog apply DIR --target`, git-ops for catalogs through AdminService.
- `client_flags`: `--api-key`, `--tls-ca`, `--tls-cert`, `--tls-key` for the commands that call a server.

They talk to Tailor only over gRPC and as subprocesses, so they import `tailor` (the public client) and
`server.core` at most; serving code never imports them. `tailor simulate`'s plot needs the `sim` extra.
"""
