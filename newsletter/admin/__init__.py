"""The operator console: an authenticated web app (``/admin``) and REST API (``/api/v1``).

``accounts`` holds the security rules (passwords, sessions, tokens, lockout),
``engine`` the one adapter to the edition engine, ``console`` the pages' routes
(the pages in ``pages``), ``api`` the REST API's routes (the endpoints in
``endpoints``), ``app`` puts them together and ``mount`` serves them beside the
subscriber app. Off until ``newsletter admin create-user`` made a user.
"""
