"""ManageSieve (RFC 5804): `wire` (the format), `session` (the sans-I/O state machine) and
`server` (the asyncio listener registered as the `managesieve` service)."""
