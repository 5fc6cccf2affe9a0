"""Use cases: one module each. They load state, ask the domain to decide, and store the result."""
