"""Promotion: roll the chosen configuration into a serving resource (ACK SageMaker Endpoint, KServe
InferenceService, any custom resource). `flow` decides (pure), `executor` talks to the API server."""
