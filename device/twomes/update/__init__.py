# Updates: checking the server's target, signed release manifests, installing (see
# docs/device-architecture.md for the modules of this package and their contracts).
