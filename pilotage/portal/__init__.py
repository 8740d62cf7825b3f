"""The web portal: organisations, users, sessions and the audit log (`accounts`), and the web app.

Each user belongs to one organisation, whose scope (`pilotage.cubes.Scope`)
the cube applies to everything the user sees.
"""
