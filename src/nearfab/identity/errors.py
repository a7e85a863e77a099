"""Identity errors are the common ones; this module names them for callers of this domain."""

from nearfab.common.errors import Forbidden, Unauthenticated

__all__ = ["Forbidden", "Unauthenticated"]
