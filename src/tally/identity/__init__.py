"""Identity: users and their sessions, roles, API keys, and the tokens that name them.

``passwords`` hashes and checks passwords, ``tokens`` signs and verifies access
tokens (JWT) and makes refresh tokens, ``roles`` maps roles to scopes,
``service`` holds the use cases (sign-up, login, refresh, members, keys) and
``store`` their SQL.
"""
