"""The server's endpoints, one router per job: service, generate, understand, analysis and the studio.

Each module has `make_router(limits)` (the OpenAPI spec carries the server's limits, so the routes are made
for them) and, where it owns a worker, `make_worker(state)`; the models reach the endpoints through the
`midilm.serve.state.State` dependency.
"""
