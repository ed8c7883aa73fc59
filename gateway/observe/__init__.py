"""What the gateway tells operators: the access log, metrics, request ids, log set-up."""
