"""Ray Serve: caption, QA and OpenAI-compatible chat endpoints over the factory's models.

`config` (typed config, light), `app` (the builder: config -> Serve application),
`api_server` (the HTTP ingress) and `model_server` (one engine per replica, batching,
adapters). Ray Serve, FastAPI and the engines load only in the modules that use them.
"""
