"""The store: PostgreSQL through asyncpg. All SQL lives in queries.sql; nothing here knows HTTP."""
