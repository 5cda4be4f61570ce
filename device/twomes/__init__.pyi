# Types for pyright (`make lint`) only; not deployed. Record is an attribute bag filled at boot
# (config.defaults, identity.load): its attributes are the config keys and identity fields, which the
# checker cannot see from the plain class, so any attribute is declared here.
from typing import Any

VERSION: str

class Record:
    def __getattr__(self, name: str) -> Any: ...
    def __setattr__(self, name: str, value: Any) -> None: ...

def unload(*names: str) -> None: ...
