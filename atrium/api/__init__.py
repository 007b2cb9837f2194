"""Control-plane REST routers (thin: parse, call a service, answer)."""
