"""The local ingest API: how the branch POS/ERP hands over sales and stock records.

Map: `server` runs uvicorn as a supervised Component; `app` builds the FastAPI app (status,
metrics, OpenAPI); `ingest` holds the one hot route, POST /v1/records, as raw ASGI on top of
the protocol-independent `ingest_core`; `auth` checks the bearer token; `schema` declares the
request and response shapes for /openapi.json. See docs/api.md for the contract.
"""
