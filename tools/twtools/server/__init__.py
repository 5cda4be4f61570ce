"""Reference provisioning server for Twomes devices (FastAPI + SQLite), its admin client and test harness.

* :mod:`twtools.server.app` - ``create_app(db_path, files_dir, max_upload=...)``
* :mod:`twtools.server.client` - ``AdminClient(url, admin_token)``, ``ServerError``
* :mod:`twtools.server.testing` - ``ReferenceServer`` (a real server in a subprocess, for tests)
* :mod:`twtools.server.cli` - ``twomes server run|openapi|register|...``

Nothing heavy is imported here, so ``twomes --help`` stays fast.
"""
