"""convtree: the Python client of the convtree service (convtree.client)."""
