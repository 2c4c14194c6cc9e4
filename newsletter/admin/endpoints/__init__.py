"""The REST API's endpoints, one module per thing they serve; ``admin.api`` lists their routes.

``base`` holds the spectree document, the token guard and the audit entry;
``editions`` editions and sending, ``readers`` the readers, ``imports`` the import.
"""
