"""Token service for distribution's token authentication (see token_service/app.py).

Interfaces for other components:

- Image: built from ``token_service/Dockerfile`` (context: this directory); runs
  ``python -m token_service`` listening on :data:`token_service.config.PORT`.
- Configuration (environment, see token_service/config.py): issuer, service, token lifetime,
  paths of the signing key, its certificate, the htpasswd file and the policy file.
- Policy file: JSON, format in token_service/access.py; ``access.open_policy()`` is the
  "no rules" document (every user every right).
"""
