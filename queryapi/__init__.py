"""The query API: a tenant's own data back out (rows, exports, binary objects), on its own Cassandra role.

The read path, module by module: api (HTTP, thin) -> sessions (the tenant's own Cassandra session) ->
tables (what the table looks like) -> plan (request to one checked CQL statement) -> rows / export /
objects (run it, page it, stream it) -> values (each value between JSON and CQL) and tokens (sealed page
and resume tokens).
"""
