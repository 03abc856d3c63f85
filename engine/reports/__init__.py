"""Reports over the store, one module a report: funnel, plays, triggers, revenue.

Each is set-wise SQL that runs on SQLite and PostgreSQL (engine/reports/sqltime.py
holds the few expressions the two spell differently) and returns a dataclass with
`to_json()`; cli/report_commands.py presents them (table, JSON, HTML).
"""
