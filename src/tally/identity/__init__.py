"""Identity: who may call, and as what.

``principals`` is the caller a use case is given; ``authentication`` turns a
bearer credential into one (``api_keys`` and ``tokens`` say how keys and
access tokens are made and checked); ``passwords`` hashes and checks
passwords; ``roles`` maps roles to scopes; ``service`` holds the use cases
(sign-up, login, refresh, members, keys); ``tenants`` makes a tenant for an
operator; ``repository`` holds their SQL.
"""

from tally.identity.authentication import Authenticator
from tally.identity.principals import Principal
from tally.identity.roles import ADMIN, ALL_SCOPES

__all__ = ["ADMIN", "ALL_SCOPES", "Authenticator", "Principal"]
