"""The API's request and response Structs, one module per area; the OpenAPI
document is generated from them (``tally.api.openapi``)."""
