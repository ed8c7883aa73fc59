"""The one place that talks to the upstream, and the record of what it did."""
