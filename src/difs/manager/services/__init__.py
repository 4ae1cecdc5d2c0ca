"""Service functions: everything the API does, as keyword-only functions over a Session.

Routes call exactly one service function each and never touch SQL. Services
raise :mod:`difs.manager.errors` exceptions and never commit: the request's
transaction (``difs.manager.api.deps``) commits once at the end or rolls back.
"""
