"""Evidence for data scientists: the durable decision log exported as VW DSJSON (`tailor export-logs`), and
offline evaluation of policies on it (`tailor evaluate`). Commands run beside the service, on its data
directory or its Redis; nothing here runs on the serving path.

Imports: `server.state` (the decision log's formats and stores), `server.core`, `policies`.
"""
