# The online phase: server calls, the HTTP(S) client, normal running (docs/device-architecture.md).
