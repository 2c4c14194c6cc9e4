"""The operator console: an authenticated web app (``/admin``) and REST API (``/api/v1``).

``accounts`` holds the security rules (passwords, sessions, tokens, lockout),
``engine`` the one adapter to the edition engine, ``console`` the pages, ``api``
the REST API, ``app`` puts them together and ``mount`` serves them beside the
subscriber app. Off until ``newsletter admin create-user`` made a user.
"""
