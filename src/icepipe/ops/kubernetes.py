"""Kubernetes CronJobs for scheduled pipelines (``icepipe schedule export --format kubernetes``).

One ``batch/v1`` CronJob per pipeline runs ``icepipe run`` on the pipeline's schedule; an
optional second one per pipeline runs ``icepipe validate`` on its own schedule. Manifests name
Secrets (``envFrom.secretRef``), never hold secret values: the pipeline files name environment
variables (``access_key_id_env: ...``), and the Secret provides them.

Field names follow the Kubernetes API (``batch/v1`` CronJob, ``core/v1`` PodSpec, checked by
``tests/ops/test_kubernetes.py`` against a transcription of the API reference, kubeconform not
being available offline).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from icepipe.cron import Schedule, parse_schedule
from icepipe.errors import ConfigError

if TYPE_CHECKING:
    from icepipe.ops.schedule import ScheduledPipeline

__all__ = ["NO_RETRY_EXIT_CODES", "KubernetesOptions", "cronjobs", "parse_resources"]

#: Exit codes retrying does not help (config, source data, validation): the Job fails at once.
NO_RETRY_EXIT_CODES = (2, 3, 6)
_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN = re.compile(rf"^{_DNS_LABEL}(\.{_DNS_LABEL})*$")
# Kubernetes resource quantities: a decimal number with a binary (Ki..Ei) or decimal (m, k,
# M..E) suffix, or an exponent (k8s.io/apimachinery/pkg/api/resource, Quantity).
_QUANTITY = re.compile(r"^(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[KMGTPE]i|[mkMGTPE])?$")
_RESOURCES = ("cpu", "memory", "ephemeral-storage")
_NAME_MAX = 52  # CronJob names: the Job controller appends 11 characters


@dataclass(frozen=True)
class KubernetesOptions:
    """How the CronJobs run.

    Attributes
    ----------
    image
        A container image with icepipe installed (``deploy/Dockerfile`` builds one).
    namespace
        The namespace of every CronJob (default: the one ``kubectl`` applies to).
    pipeline_dir
        Where the pipeline files are inside the container (default: their paths here).
    configmap
        A ConfigMap holding the pipeline files, mounted read-only at ``pipeline_dir``.
    env_from_secrets
        Secrets whose keys become environment variables of the container (``envFrom``): the
        credentials the pipelines' ``*_env`` keys name.
    requests, limits
        Container resources (``cpu``, ``memory``, ``ephemeral-storage``: quantities).
    service_account
        The pod's service account (cloud identities: IRSA, GKE Workload Identity).
    state_dir, state_claim
        ``--state-dir`` of every run (run reports), and a PersistentVolumeClaim mounted there
        so that reports outlive the pod.
    validate_schedule, validate_timezone
        Also a CronJob per pipeline running ``icepipe validate`` on this schedule (cron
        syntax), in this zone (default: the pipeline's).
    validate_sample
        ``icepipe validate --sample N`` (None: validate's default).
    """

    image: str = "icepipe:latest"
    namespace: str | None = None
    pipeline_dir: str | None = None
    configmap: str | None = None
    env_from_secrets: tuple[str, ...] = ()
    requests: Mapping[str, str] = field(default_factory=dict)
    limits: Mapping[str, str] = field(default_factory=dict)
    service_account: str | None = None
    state_dir: str | None = None
    state_claim: str | None = None
    validate_schedule: str | None = None
    validate_timezone: str | None = None
    validate_sample: int | None = None

    def __post_init__(self) -> None:
        self.validation_schedule("UTC")  # refuses a bad --validate-schedule now
        names: list[tuple[str, str | None]] = [
            ("--env-from-secret", s) for s in self.env_from_secrets
        ]
        names += [("--service-account", self.service_account), ("--configmap", self.configmap)]
        names += [("--namespace", self.namespace), ("--state-claim", self.state_claim)]
        for flag, name in names:
            if name is not None and not (len(name) <= 253 and _DNS_SUBDOMAIN.match(name)):
                raise ConfigError(
                    "expected a Kubernetes object name (lower-case letters, digits, '-' and "
                    f"'.', starting and ending with a letter or digit); got {name!r}",
                    field=flag,
                )
        if self.state_claim and not self.state_dir:
            raise ConfigError(
                "give --state-dir too: the path the claim is mounted at, where runs write "
                "their reports",
                field="--state-claim",
            )
        if self.state_dir and not self.state_dir.startswith("/"):
            raise ConfigError(
                f"expected an absolute path inside the container; got {self.state_dir!r}",
                field="--state-dir",
            )

    def validation_schedule(self, timezone: str) -> Schedule | None:
        """The validation CronJobs' schedule, for a pipeline scheduled in ``timezone``.

        Raises
        ------
        ConfigError
            ``validate_schedule`` is not cron syntax, or ``validate_timezone`` no IANA zone.
        """
        if self.validate_schedule is None:
            if self.validate_timezone is not None:
                raise ConfigError(
                    "applies to --validate-schedule, which is not given",
                    field="--validate-timezone",
                )
            return None
        raw = {"cron": self.validate_schedule, "timezone": self.validate_timezone or timezone}
        return parse_schedule(raw, "--validate-schedule")


def parse_resources(
    text: str, *, where: str = "--resources"
) -> tuple[dict[str, str], dict[str, str]]:
    """``cpu=2,memory=8Gi`` (requests and limits alike), or ``requests.cpu=1,limits.cpu=2,...``:
    the container's (requests, limits).

    Raises
    ------
    ConfigError
        An unknown resource or a malformed quantity.
    """
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        scope, _, resource = key.strip().rpartition(".")
        value = value.strip()
        if not sep or scope not in ("", "requests", "limits") or resource not in _RESOURCES:
            raise ConfigError(
                f"expected RESOURCE=QUANTITY items (RESOURCE: {', '.join(_RESOURCES)}, "
                f"optionally prefixed by requests. or limits.), e.g. cpu=2,memory=8Gi; got "
                f"{item!r}",
                field=where,
            )
        if not _QUANTITY.match(value):
            raise ConfigError(
                f"expected a Kubernetes quantity for {key.strip()} (e.g. 500m, 2, 8Gi, 1.5G); "
                f"got {value!r}",
                field=where,
            )
        if scope in ("", "requests"):
            requests[resource] = value
        if scope in ("", "limits"):
            limits[resource] = value
    if not requests and not limits:
        raise ConfigError("expected e.g. cpu=2,memory=8Gi; got nothing", field=where)
    return requests, limits


def cronjobs(
    pipelines: Sequence[ScheduledPipeline],
    command: Sequence[str],
    run_args: Sequence[str],
    options: KubernetesOptions,
) -> list[dict[str, Any]]:
    """The CronJob manifests: one per pipeline, and one validation CronJob per pipeline when
    ``options.validate_schedule`` is set."""
    docs: list[dict[str, Any]] = []
    for p in pipelines:
        path = _path_in_pod(p, options)
        state = ["--state-dir", options.state_dir] if options.state_dir else []
        run = [*command, "run", path, *state, *run_args]
        mount = options.pipeline_dir or str(p.path.parent)
        docs.append(_cronjob(p.name, "run", p.schedule, run, options, mount))
        schedule = options.validation_schedule(p.schedule.timezone)
        if schedule is not None:
            sample = options.validate_sample
            check = [*command, "validate", path]
            check += ["--sample", str(sample)] if sample is not None else []
            docs.append(_cronjob(p.name, "validate", schedule, check, options, mount))
    return docs


def _path_in_pod(p: ScheduledPipeline, options: KubernetesOptions) -> str:
    if options.pipeline_dir:
        return f"{options.pipeline_dir.rstrip('/')}/{p.path.name}"
    return str(p.path)


def _name(pipeline: str, task: str) -> str:
    safe = "".join(c if c.isalnum() else "-" for c in pipeline.lower()).strip("-")
    suffix = "" if task == "run" else f"-{task}"
    return f"icepipe-{safe}"[: _NAME_MAX - len(suffix)].rstrip("-") + suffix


def _container(command: list[str], options: KubernetesOptions, mount: str) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "icepipe", "image": options.image, "command": command}
    if options.env_from_secrets:
        container["envFrom"] = [{"secretRef": {"name": s}} for s in options.env_from_secrets]
    resources = {}
    if options.requests:
        resources["requests"] = dict(options.requests)
    if options.limits:
        resources["limits"] = dict(options.limits)
    if resources:
        container["resources"] = resources
    mounts = []
    if options.configmap:
        mounts.append({"name": "pipelines", "mountPath": mount, "readOnly": True})
    if options.state_claim:
        mounts.append({"name": "state", "mountPath": options.state_dir})
    if mounts:
        container["volumeMounts"] = mounts
    return container


def _pod(command: list[str], options: KubernetesOptions, mount: str) -> dict[str, Any]:
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [_container(command, options, mount)],
    }
    if options.service_account:
        pod["serviceAccountName"] = options.service_account
    volumes = []
    if options.configmap:
        volumes.append({"name": "pipelines", "configMap": {"name": options.configmap}})
    if options.state_claim:
        claim = {"claimName": options.state_claim}
        volumes.append({"name": "state", "persistentVolumeClaim": claim})
    if volumes:
        pod["volumes"] = volumes
    return pod


def _cronjob(
    pipeline: str,
    task: str,
    schedule: Schedule,
    command: list[str],
    options: KubernetesOptions,
    mount: str,
) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": "icepipe", "icepipe.dev/pipeline": pipeline}
    if task != "run":
        labels["icepipe.dev/task"] = task
    metadata: dict[str, Any] = {"name": _name(pipeline, task), "labels": labels}
    if options.namespace:
        metadata["namespace"] = options.namespace
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": metadata,
        "spec": {
            "schedule": schedule.expression,
            "timeZone": schedule.timezone,
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": 3600,
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 5,
            "jobTemplate": {
                "spec": {
                    "backoffLimit": 3,
                    # Config, source-data and validation errors fail at once; conflicts (4)
                    # and transient storage errors (5) are retried with back-off.
                    "podFailurePolicy": {
                        "rules": [
                            {
                                "action": "FailJob",
                                "onExitCodes": {
                                    "containerName": "icepipe",
                                    "operator": "In",
                                    "values": list(NO_RETRY_EXIT_CODES),
                                },
                            }
                        ]
                    },
                    "template": {
                        "metadata": {"labels": dict(labels)},  # a copy: no YAML anchors
                        "spec": _pod(command, options, mount),
                    },
                }
            },
        },
    }
