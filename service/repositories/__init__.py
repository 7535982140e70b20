"""Repositories: every SQL statement of the service, one module per table group.

Functions take an open ``Session`` and never commit; the service layer owns transactions.
"""
