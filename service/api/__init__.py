"""The HTTP edge: litestar controllers, wire types and problem details. The only room that knows HTTP."""
