"""LocalStack plugins that make stepchain's e2e tier run without Docker (test infrastructure only).

- ``dynamodb_moto``: provider ``dynamodb:moto`` (``PROVIDER_OVERRIDE_DYNAMODB=moto``).
- ``host_executor``: Lambda runtime executor ``stepchain-host`` (``LAMBDA_RUNTIME_EXECUTOR=stepchain-host``).

Targets localstack-core 2026.3.0 exactly; the modules import LocalStack internals, so import them only
inside the LocalStack process.
"""

__all__: list[str] = []
