"""Read-side helpers for the dashboard pages: queries, pagination, page geometry.

Each module serves one concept of the pages; none changes state (the views
call :mod:`runs.services` for that).
"""
