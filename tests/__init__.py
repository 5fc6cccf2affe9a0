"""convtree's tests, in three lanes (`./dev test unit`, `./dev test integration`, `./dev test migration`):

- unit: the domain and other pure code; no database, no server, no network, under two seconds.
- integration: real PostgreSQL, the API over HTTP, real clients (the Python client, the OpenAI SDK, a browser).
- migration: schema/schema.sql against the migrations, databases and exports of earlier versions.

The lanes that need them register the database fixtures (tests/postgres.py) and the server fixtures
(tests/servers.py) in their own conftest.py; the unit lane has neither.
"""
