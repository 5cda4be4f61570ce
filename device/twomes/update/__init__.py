# Updates: check.py (the server's target -> a job), job.py (the update boot), bundle.py and image.py
# (installers), confirm.py (confirm what runs, keep it or count the failure), state.py (the one owner of
# every persisted update state and its formats). Each module is loaded for its moment and unloaded.
