"""`make bench`: the gateway's cost per request beside the upstream alone and a bare relay."""
