"""Typed config of the serving app: models, endpoints' prompts, limits, security, scaling.

Light on purpose (pydantic only): `factory serve`, the preset tests and `factory config`
read it on the driver. `factory.serve.app_builder.build_application` turns it into a Serve
application; nothing else reads deployment options.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from factory.models.demo import DEMO_VLM
from factory.models.engine import EngineConfig, GenerationParams
from factory.prompts import STYLE_PROMPTS

BASE_MODEL_NAME = "tiny-llava"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AutoscalingOptions(Strict):
    """Serve's request-based autoscaling for one deployment."""

    min_replicas: int = Field(1, ge=0, description="replicas kept even when idle")
    max_replicas: int = Field(1, ge=1, description="most replicas under load")
    target_ongoing_requests: float = Field(
        2.0, gt=0, description="ongoing requests per replica the autoscaler aims for"
    )
    upscale_delay_s: float = Field(30.0, ge=0, description="load must last this long to add")
    downscale_delay_s: float = Field(600.0, ge=0, description="idle this long to remove")

    @model_validator(mode="after")
    def _ordered(self) -> AutoscalingOptions:
        if self.min_replicas > self.max_replicas:
            raise ValueError("autoscaling.min_replicas is above max_replicas")
        return self


class DeploymentOptions(Strict):
    """Replicas, resources, queue bounds and shutdown of one Serve deployment."""

    num_replicas: int = Field(1, ge=1, description="fixed replica count (without autoscaling)")
    autoscaling: AutoscalingOptions | None = Field(
        None, description="request-based autoscaling; when set, num_replicas is ignored"
    )
    num_cpus: float = Field(1.0, ge=0, description="CPUs reserved per replica")
    num_gpus: float = Field(0.0, ge=0, description="GPUs reserved per replica")
    custom_resources: dict[str, float] = Field(
        default_factory=dict,
        description="Ray custom resources per replica, e.g. {vlm_slot: 1} for cluster.yaml's "
        "gpu_vlm nodes",
    )
    memory_bytes: int | None = Field(None, ge=1, description="memory reserved per replica")
    max_ongoing_requests: int = Field(
        16, ge=1, description="requests one replica works on at once (Serve's concurrency cap)"
    )
    max_queued_requests: int = Field(
        64,
        ge=-1,
        description="requests waiting for a replica beyond that; more are answered 503 with "
        "Retry-After (backpressure) instead of queueing without bound. -1: unbounded",
    )
    graceful_shutdown_wait_loop_s: float = Field(
        1.0, gt=0, description="how often a stopping replica checks for unfinished requests"
    )
    graceful_shutdown_timeout_s: float = Field(
        20.0, ge=0, description="a stopping replica finishes its requests for at most this long"
    )
    health_check_period_s: float = Field(10.0, gt=0, description="seconds between health checks")
    health_check_timeout_s: float = Field(30.0, gt=0, description="a slower check fails")
    runtime_env: dict[str, Any] = Field(
        default_factory=dict,
        description="Ray runtime_env of the replicas (env_vars, pip, working_dir, ...)",
    )
    access_log: bool = Field(
        True, description="log a line per request (costs about a millisecond per request)"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="the replicas' log level"
    )

    def serve_options(self) -> dict[str, Any]:
        """Keyword arguments for `serve.deployment`; only the builder calls this."""
        actor: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if self.custom_resources:
            actor["resources"] = dict(self.custom_resources)
        if self.memory_bytes is not None:
            actor["memory"] = self.memory_bytes
        if self.runtime_env:
            actor["runtime_env"] = self.runtime_env
        options: dict[str, Any] = {
            "ray_actor_options": actor,
            "max_ongoing_requests": self.max_ongoing_requests,
            "max_queued_requests": self.max_queued_requests,
            "graceful_shutdown_wait_loop_s": self.graceful_shutdown_wait_loop_s,
            "graceful_shutdown_timeout_s": self.graceful_shutdown_timeout_s,
            "health_check_period_s": self.health_check_period_s,
            "health_check_timeout_s": self.health_check_timeout_s,
            "logging_config": {"enable_access_log": self.access_log, "log_level": self.log_level},
        }
        if self.autoscaling is None:
            options["num_replicas"] = self.num_replicas
        else:
            options["autoscaling_config"] = self.autoscaling.model_dump()
        return options


class ModelDeploymentOptions(DeploymentOptions):
    """The model deployment: one loaded engine per replica, batching, adapter cache."""

    max_batch_size: int = Field(
        8, ge=1, description="requests generated together in one engine call"
    )
    batch_wait_timeout_s: float = Field(
        0.005,
        ge=0,
        description="how long a batch waits to fill while other requests are in flight on "
        "the replica; a lone request on an idle replica starts at once and pays nothing. "
        "Under load it lets batches fill (0 runs with what is waiting, which stays little "
        "while a CPU engine holds the GIL and the replica's loop cannot take requests)",
    )
    max_adapters_per_replica: int = Field(
        4, ge=1, description="adapters kept loaded per replica; the least recently used leaves"
    )
    gather_in_ingress: bool | None = Field(
        None,
        description="the ingress gathers single requests from concurrent clients (same "
        "adapter and decoding) into one model call of up to max_batch_size, waiting as "
        "above: each call costs a replica CPU of its own, so batches come formed. None: on "
        "for a fixed replica count and an engine batched per call (transformers, plugins); "
        "off under autoscaling (Serve's autoscaler counts calls, and a gathered call counts "
        "once) and for vllm and openai engines, which schedule each request themselves",
    )

    @model_validator(mode="after")
    def _gathering_keeps_autoscaling_honest(self) -> ModelDeploymentOptions:
        if self.gather_in_ingress and self.autoscaling is not None:
            raise ValueError(
                "gather_in_ingress with autoscaling: the autoscaler counts calls, and a "
                "gathered call of many requests counts once; leave gather_in_ingress unset"
            )
        return self


class AuthConfig(Strict):
    api_keys_env: str | None = Field(
        None,
        description="environment variable (on the replicas) holding the accepted API keys, "
        "comma-separated; clients send one as 'Authorization: Bearer KEY'. None: no auth "
        "(keep http.host on loopback then). Set but empty or missing: the app refuses to start",
    )


class RequestLimits(Strict):
    max_body_bytes: int = Field(
        16 * 1024 * 1024, ge=1, description="largest request body (413 beyond)"
    )
    max_image_bytes: int = Field(
        12 * 1024 * 1024, ge=1, description="largest encoded image, sent or fetched (413)"
    )
    max_image_pixels: int = Field(
        64_000_000, ge=1, description="largest width x height, read from the header (413)"
    )
    min_image_side: int = Field(32, ge=1, description="smallest image side in pixels (422)")
    max_aspect_ratio: float = Field(20.0, ge=1, description="long side / short side (422)")
    request_timeout_s: float = Field(
        60.0, gt=0, description="longest a model call may take before a 504"
    )
    retry_after_s: int = Field(
        1, ge=0, description="Retry-After seconds sent with a 503 when the queue is full"
    )
    max_new_tokens: int = Field(
        512, ge=1, description="most tokens a client may ask for (max_tokens above it: 422)"
    )
    max_prompt_tokens: int | None = Field(
        8192,
        ge=1,
        description="most prompt tokens (system + prompt, as the model's tokenizer counts "
        "them) one request may bring (400 context_length_exceeded); the model's context "
        "less the request's max_new_tokens applies too, where the engine knows one (vLLM's "
        "max_model_len, the tokenizer's model_max_length). None: only the model's. Checked "
        "by the model deployment before the request joins a batch: no engine time is spent",
    )
    max_messages: int = Field(
        64, ge=1, description="most messages in one chat request (413 too_many_messages)"
    )
    max_text_chars: int = Field(
        32_000,
        ge=1,
        description="most characters in any one text field: a message, a question, a "
        "catalogue field (413 text_too_long); images are bounded by max_image_bytes instead",
    )
    max_json_depth: int = Field(
        32, ge=2, description="deepest nesting of objects and arrays in a JSON body (400)"
    )
    max_json_keys: int = Field(
        1_000, ge=1, description="most object keys in a JSON body, all levels together (413)"
    )
    max_stop_sequences: int = Field(4, ge=0, description="most `stop` strings (OpenAI's is 4)")
    body_read_timeout_s: float = Field(
        10.0,
        gt=0,
        description="longest wait for the next piece of a request body: a client that goes "
        "silent mid-upload gets a 408 and frees its connection",
    )


class UrlFetchConfig(Strict):
    """Fetching images from URLs a client names: the server's SSRF surface."""

    enabled: bool = Field(True, description="accept http(s) image URLs at all")
    allowed_networks: list[str] = Field(
        default_factory=list,
        description="CIDRs fetched even though not public, e.g. ['10.1.0.0/16'] for an "
        "internal image store; every private, loopback, link-local, multicast and "
        "reserved address is refused otherwise",
    )
    timeout_s: float = Field(10.0, gt=0, description="whole fetch, redirects included")
    max_redirects: int = Field(3, ge=0, description="redirects followed (each re-checked)")

    @field_validator("allowed_networks")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        import ipaddress

        for cidr in value:
            ipaddress.ip_network(cidr, strict=False)  # raises ValueError on a bad one
        return value


class CriticLoopOptions(Strict):
    """`critic: true` on /v1/caption: atomic facts, a verdict per fact, a rewrite."""

    model: str | None = Field(
        None,
        description="served model name (base or adapter) that decomposes, judges and "
        "rewrites; None: the base model",
    )
    decompose_prompt: str = Field("decompose", description="prompt template for the facts")
    critic_prompt: str = Field("critic", description="prompt template for each verdict")
    rewrite_prompt: str = Field("rewrite", description="prompt template for the rewrite")
    max_facts: int = Field(8, ge=1, description="facts judged per caption (one call each)")
    max_new_tokens: int = Field(200, ge=1, description="token budget of each loop call")


class HttpOptions(Strict):
    host: str = Field("127.0.0.1", description="address the HTTP proxy listens on")
    access_log: bool = Field(True, description="the proxies log a line per request")
    port: int = Field(8000, ge=0, le=65535, description="its port")
    keep_alive_timeout_s: int = Field(5, ge=1, description="idle keep-alive connections close")


class ServeConfig(Strict):
    """Everything `factory serve` needs; field descriptions are the documentation."""

    app_name: str = Field("caption-factory", description="Serve application name")
    ray_address: str | None = Field(
        None,
        description="Ray cluster `factory serve` joins ('auto', 'ray://host:10001'); None: a "
        "local Ray, or the cluster a `ray job submit` runs in",
    )
    route_prefix: str = Field("/", description="URL prefix of every endpoint")
    model_name: str = Field(
        BASE_MODEL_NAME, description="the name clients use in `model` for the base model"
    )
    engine: EngineConfig = Field(
        default_factory=lambda: EngineConfig(model=DEMO_VLM),
        description="the base model and engine; keep engine.adapters empty and list "
        "adapters under `adapters`",
    )
    adapters: dict[str, str] = Field(
        default_factory=dict,
        description="adapter name (what clients send as `model`) -> PEFT adapter directory "
        "or s3:// prefix, trained on the base model; loaded on first use per replica",
    )
    generation: GenerationParams = Field(
        default_factory=lambda: GenerationParams(max_new_tokens=96),
        description="decoding of /v1/caption and /v1/qa; chat requests bring their own",
    )
    styles: dict[str, str] = Field(
        default_factory=lambda: dict(STYLE_PROMPTS),
        description="caption style -> prompt template; other styles are refused (422)",
        min_length=1,
    )
    withhold_catalogue: list[str] = Field(
        default_factory=lambda: ["formal_analysis"],
        description="styles whose prompt never sees the catalogue metadata a client sends",
    )
    qa_prompt: str = Field("serve_answer", description="prompt template of /v1/qa")
    critic: CriticLoopOptions = Field(default_factory=CriticLoopOptions)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    limits: RequestLimits = Field(default_factory=RequestLimits)
    url_fetch: UrlFetchConfig = Field(default_factory=UrlFetchConfig)
    http: HttpOptions = Field(default_factory=HttpOptions)
    api_deployment: DeploymentOptions = Field(
        default_factory=lambda: DeploymentOptions(
            num_cpus=0.25, max_ongoing_requests=256, max_queued_requests=-1
        ),
        description="the HTTP ingress: parsing, auth, image fetch and validation",
    )
    model_deployment: ModelDeploymentOptions = Field(
        default_factory=ModelDeploymentOptions,
        description="the model replicas; its queue bound is the 503 backpressure",
    )

    @model_validator(mode="after")
    def _names(self) -> ServeConfig:
        if self.engine.adapters:
            raise ValueError("list adapters under `adapters`, not engine.adapters")
        if self.model_name in self.adapters:
            raise ValueError(f"adapter name {self.model_name!r} is the base model's name")
        names = {self.model_name, *self.adapters}
        if self.critic.model is not None and self.critic.model not in names:
            raise ValueError(f"critic.model {self.critic.model!r} is not served: {names}")
        return self

    def gathers_in_ingress(self) -> bool:
        """Whether the ingress gathers concurrent requests into one model call."""
        options = self.model_deployment
        if options.max_batch_size == 1:
            return False
        if options.gather_in_ingress is not None:
            return options.gather_in_ingress
        return options.autoscaling is None and self.engine.kind not in ("vllm", "openai")

    def served_models(self) -> list[str]:
        return [self.model_name, *self.adapters]

    def proxy_timeout_s(self) -> float:
        """The HTTP proxy's own limit, above the longest request the app itself bounds (an
        image fetch, then caption, facts, verdicts and rewrite calls), so the app's JSON
        504 comes first."""
        return self.url_fetch.timeout_s + 4 * self.limits.request_timeout_s + 5.0
