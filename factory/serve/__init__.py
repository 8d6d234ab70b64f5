"""Ray Serve: caption, QA and OpenAI-compatible chat endpoints over the factory's models.

`serve_config` (typed config, light), `app_builder` (config -> Serve application),
`ingress` (the HTTP ingress deployment) with its `routes` and `request_gatherer`
(concurrent requests as one model call), `model_deployment` (one engine per replica,
batching, adapters) and `caption_tasks` (caption, QA, critic over it). Ray Serve, FastAPI
and the engines load only in the modules that use them.
"""
