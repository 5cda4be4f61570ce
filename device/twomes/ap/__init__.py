# Setup mode (access point): twomes.ap.controller.run(app, saved) is the phase; see docs/setup-mode.md.
