"""The edge: middleware, the client address, request bodies, rendering errors, SSE."""
