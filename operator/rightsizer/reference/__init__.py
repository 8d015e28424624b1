"""The reference workload: a synthetic credit-card-fraud XGBoost model and a built-in server that speaks
SageMaker's serving contract."""
