// The admin API's contract: the types and the APIProtocol that swift-openapi-generator makes from openapi.yaml at build time.
