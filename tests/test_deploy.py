"""The container image and the Kubernetes example agree with each other and with the service.

The Dockerfile is read statically (there is no container engine here), the manifests in
examples/kubernetes/ with PyYAML (several documents to a file allowed) and the config in the
ConfigMap with choreo-ingest's own loader. Each check is a function of one `Bundle` (all those
files, read once); `test_shipped_files` runs every check on the files as shipped, and
`test_a_broken_file_is_caught` breaks a copy of them one way at a time and expects the check
that guards that agreement to fail, so that no check passes vacuously.

What serve answers (its routes and the event forwarder's path) comes from the service's
interface; how OpenChoreo's event forwarder is configured and labelled comes from the
openchoreo/openchoreo Helm chart (install/helm/openchoreo-control-plane: values.yaml,
templates/event-forwarder/deployment.yaml).
"""

from __future__ import annotations

import base64
import copy
import ipaddress
import json
import re
import shlex
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from choreo_ingest.config import Config, DeferredSecret, load_config

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
KUBERNETES = ROOT / "examples" / "kubernetes"
HELM_VALUES = KUBERNETES / "openchoreo-values.yaml"  # Helm values, not a manifest
KUSTOMIZATION = KUBERNETES / "kustomization.yaml"  # `kubectl apply -k`, not a manifest
LEFT_OUT_OF_APPLY = {"CronJob", "Secret"}  # the Deployment's alternative; a Secret of empty values

FORWARDER_PATH = "/api/events/http/openchoreo"  # the event forwarder's default path
# The chart's own default endpoint; Helm replaces lists whole, so the snippet must keep it.
CHART_DEFAULT_ENDPOINT = "http://backstage:7007/api/events/http/openchoreo"
FORWARDER_LABEL = ("app.kubernetes.io/component", "event-forwarder")
ENDPOINT_KEYS = {"url", "retry"}  # the chart's schema for an endpoint (additionalProperties: false)
CONTAINER = "choreo-ingest"
PATCH_TAG = re.compile(r"python:3\.\d+\.\d+-slim-[a-z]+")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
TMP = "/tmp"  # noqa: S108 - the container's /tmp, a path in the manifests
ALL_INTERFACES = ("0.0.0.0", "::")  # noqa: S104 - what serve must bind in a pod

Document = dict[str, Any]


# --- reading the files --------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str  # upper case: FROM, RUN, ...
    value: str  # the rest of the (joined) line

    def json_or_words(self) -> list[str]:
        """The exec form (a JSON array) or, for the shell form, its words."""
        if self.value.startswith("["):
            words = json.loads(self.value)
            assert isinstance(words, list), self.value
            return [str(word) for word in words]
        return shlex.split(self.value)


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comment lines dropped."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # a comment line may sit inside a continued instruction too
        continued = line.endswith("\\")
        pending += (line[:-1] if continued else line) + " "
        if not continued:
            keyword, _, value = pending.strip().partition(" ")
            instructions.append(Instruction(keyword.upper(), value.strip()))
            pending = ""
    assert not pending, "the Dockerfile ends in a continuation line"
    return instructions


@dataclass
class Stage:
    base: str  # the image reference, ARGs substituted
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def values(self, keyword: str) -> list[Instruction]:
        return [step for step in self.instructions if step.keyword == keyword]

    def args(self) -> dict[str, str]:
        """The stage's own ARGs with their defaults (what a build without --build-arg gets)."""
        found: dict[str, str] = {}
        for step in self.values("ARG"):
            name, _, value = step.value.partition("=")
            found[name.strip()] = value.strip().strip("\"'")
        return found

    def expanded(self, text: str) -> str:
        """`text` with the stage's ARGs in `${NAME}` and `$NAME` form replaced by their defaults."""
        for name, value in self.args().items():
            text = text.replace(f"${{{name}}}", value).replace(f"${name}", value)
        return text

    def env(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for step in self.values("ENV"):
            for item in shlex.split(step.value):
                name, equals, value = item.partition("=")
                assert equals, f"ENV in the NAME=value form, not {step.value!r}"
                found[name] = value
        return found


def dockerfile_stages(text: str) -> list[Stage]:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for step in parse_dockerfile(text):
        if step.keyword == "FROM":
            reference, *rest = step.value.split()
            for name, value in global_args.items():
                reference = reference.replace(f"${{{name}}}", value).replace(f"${name}", value)
            name = rest[1] if len(rest) == 2 and rest[0].upper() == "AS" else None
            stages.append(Stage(reference, name))
        elif stages:
            stages[-1].instructions.append(step)
        elif step.keyword == "ARG":
            name, _, value = step.value.partition("=")
            global_args[name.strip()] = value.strip().strip("\"'")
    assert stages, "the Dockerfile has no FROM"
    return stages


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Whether Docker leaves `path` (relative to the context) out: the last matching pattern
    decides, and a pattern matching a directory matches everything below it."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: index + 1]) for index in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        regex = glob_regex(pattern.removeprefix("!").strip("/"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            excluded = not negated
    return excluded


def glob_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    index = 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            out, index = out + "(?:.*/)?", index + 3
        elif pattern.startswith("**", index):
            out, index = out + ".*", index + 2
        else:
            char = pattern[index]
            out += {"*": "[^/]*", "?": "[^/]"}.get(char, re.escape(char))
            index += 1
    return re.compile(out)


@dataclass
class Bundle:
    """Everything the checks compare, read once; tests break deep copies of it."""

    dockerfile: str
    dockerignore: list[str]
    manifests: dict[str, list[Document]]  # file name -> its documents
    helm_values: Document
    kustomization: Document
    workdir: Path  # where the ConfigMap's config is written for the loader

    def documents(self) -> Iterator[tuple[str, Document]]:
        for name, documents in self.manifests.items():
            for document in documents:
                yield name, document

    def one(self, kind: str) -> Document:
        found = [document for _, document in self.documents() if document.get("kind") == kind]
        assert len(found) == 1, f"expected one {kind} in {KUBERNETES.name}/, found {len(found)}"
        return found[0]

    def stages(self) -> list[Stage]:
        return dockerfile_stages(self.dockerfile)

    def final_stage(self) -> Stage:
        return self.stages()[-1]

    def config_text(self) -> str:
        configmap = self.one("ConfigMap")
        assert "config.yaml" in configmap["data"], "the ConfigMap holds no config.yaml"
        text = configmap["data"]["config.yaml"]
        assert isinstance(text, str)
        return text

    def set_config(self, update: Callable[[Document], None]) -> None:
        """Change the config in the ConfigMap (for the tests that break it)."""
        document = yaml.safe_load(self.config_text())
        update(document)
        self.one("ConfigMap")["data"]["config.yaml"] = yaml.safe_dump(document)

    def config(self, workload: str = "Deployment") -> Config:
        """The ConfigMap's config through `load_config`, with the workload's environment for
        its `${VAR}` placeholders (a value from a Secret or field stands in as `placeholder`)."""
        env = {
            item["name"]: str(item.get("value", "placeholder"))
            for item in container(self.one(workload)).get("env", [])
        }
        path = self.workdir / "config.yaml"
        path.write_text(self.config_text(), encoding="utf-8")
        path.chmod(0o600)
        return load_config(path, env=env)


def load_bundle(workdir: Path) -> Bundle:
    manifests: dict[str, list[Document]] = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        if path in (HELM_VALUES, KUSTOMIZATION):
            continue
        documents = [
            document
            for document in yaml.safe_load_all(path.read_text(encoding="utf-8"))
            if document is not None
        ]
        assert documents, f"{path.name} holds no document"
        manifests[path.name] = documents
    assert manifests, f"no manifests in {KUBERNETES}"
    ignore = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return Bundle(
        dockerfile=DOCKERFILE.read_text(encoding="utf-8"),
        dockerignore=[line.strip() for line in ignore if line.strip() and line[0] != "#"],
        manifests=manifests,
        helm_values=yaml.safe_load(HELM_VALUES.read_text(encoding="utf-8")),
        kustomization=yaml.safe_load(KUSTOMIZATION.read_text(encoding="utf-8")),
        workdir=workdir,
    )


# --- reading the manifests --------------------------------------------------------------


def pod_spec(workload: Document) -> Document:
    if workload["kind"] == "CronJob":
        spec: Document = workload["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    else:
        spec = workload["spec"]["template"]["spec"]
    return spec


def pod_labels(workload: Document) -> dict[str, str]:
    if workload["kind"] == "CronJob":
        template = workload["spec"]["jobTemplate"]["spec"]["template"]
    else:
        template = workload["spec"]["template"]
    labels: dict[str, str] = template["metadata"]["labels"]
    return labels


def container(workload: Document) -> Document:
    found = [c for c in pod_spec(workload)["containers"] if c["name"] == CONTAINER]
    assert len(found) == 1, f"{workload['kind']} has no container named {CONTAINER}"
    return found[0]


def container_port(workload: Document) -> tuple[str, int]:
    """The (name, number) of the one port the container declares."""
    ports = container(workload).get("ports", [])
    assert len(ports) == 1, f"{workload['kind']}: expected one container port, got {ports}"
    return ports[0].get("name", ""), int(ports[0]["containerPort"])


def resolve_port(workload: Document, port: object) -> int:
    """A port given by number or by the container port's name, as a number."""
    name, number = container_port(workload)
    if isinstance(port, int):
        return port
    assert port == name, f"{workload['kind']} has no container port named {port!r}"
    return number


def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


def mount_for(workload: Document, path: PurePosixPath) -> tuple[Document, Document]:
    """The volume mount holding `path` (the deepest) and its volume."""
    mounts = [
        mount
        for mount in container(workload).get("volumeMounts", [])
        if path == PurePosixPath(mount["mountPath"])
        or PurePosixPath(mount["mountPath"]) in path.parents
    ]
    assert mounts, f"{workload['kind']}: nothing is mounted at or above {path}"
    mount = max(mounts, key=lambda m: len(PurePosixPath(m["mountPath"]).parts))
    volumes = {volume["name"]: volume for volume in pod_spec(workload).get("volumes", [])}
    assert mount["name"] in volumes, f"{workload['kind']}: no volume {mount['name']}"
    return mount, volumes[mount["name"]]


def option(args: list[str], name: str) -> str | None:
    """The value of `--name VALUE` or `--name=VALUE` in a command line."""
    for index, arg in enumerate(args):
        if arg == name and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith(f"{name}="):
            return arg.partition("=")[2]
    return None


def secret_keys(secret: Document) -> set[str]:
    return set(secret.get("data") or {}) | set(secret.get("stringData") or {})


def listen_parts(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


def effective_security(workload: Document) -> dict[str, Any]:
    """The container's security settings, the pod's where the container sets none."""
    pod = pod_spec(workload).get("securityContext", {})
    own = container(workload).get("securityContext", {})
    keys = ("runAsNonRoot", "runAsUser", "runAsGroup", "seccompProfile")
    return {**{key: pod[key] for key in keys if key in pod}, **own, "fsGroup": pod.get("fsGroup")}


def dockerfile_user(bundle: Bundle) -> tuple[int, int | None]:
    """The final stage's USER as numbers (uid, gid or None)."""
    users = bundle.final_stage().values("USER")
    assert users, "the image runs as root: no USER in the final stage"
    user = users[-1].value
    assert re.fullmatch(r"\d+(:\d+)?", user), f"USER must be numeric (uid[:gid]), not {user!r}"
    uid, _, gid = user.partition(":")
    return int(uid), int(gid) if gid else None


WORKLOADS = ("Deployment", "CronJob")


def config_file(bundle: Bundle, workload: Document) -> PurePosixPath:
    """The config file the workload's command reads: --config, else $CHOREO_INGEST_CONFIG
    (the container's, then the image's)."""
    args = [*container(workload).get("command", []), *container(workload).get("args", [])]
    env = {item["name"]: item.get("value") for item in container(workload).get("env", [])}
    found = (
        option(args, "--config")
        or env.get("CHOREO_INGEST_CONFIG")
        or bundle.final_stage().env().get("CHOREO_INGEST_CONFIG")
    )
    assert found, f"{workload['kind']} names no config file"
    return PurePosixPath(found)


def secret_files(config: Config, workload: str) -> dict[str, object]:
    """Config key -> the secret file it names, for what the workload's command reads."""
    auth = config.openchoreo.auth
    files: dict[str, object] = {
        "openchoreo.auth.tokenFile": auth.token_file,
        "openchoreo.auth.oauth.clientSecretFile": auth.oauth.client_secret_file
        if auth.oauth
        else None,
    }
    if workload == "Deployment":  # `run` (the CronJob) never reads serve's files
        files["serve.auth.tokenFile"] = config.serve.token_file
        files["serve.events.secretFile"] = config.serve.events_secret_file
    return {key: value for key, value in files.items() if value is not None}


# --- the checks ----------------------------------------------------------------------------


def check_dockerfile_base(bundle: Bundle) -> None:
    """Every base image is pinned to a full patch version, and by a well-formed digest."""
    stage_names = set()
    for stage in bundle.stages():
        if stage.base not in stage_names:
            reference, _, digest = stage.base.partition("@")
            reference = reference.removeprefix("docker.io/library/")
            assert PATCH_TAG.fullmatch(reference), f"base not pinned to a patch tag: {stage.base}"
            if digest:
                assert DIGEST.fullmatch(digest), f"malformed digest: {digest}"
        if stage.name:
            stage_names.add(stage.name)


def check_dockerfile_user(bundle: Bundle) -> None:
    uid, gid = dockerfile_user(bundle)
    assert uid != 0, "USER 0 is root"
    assert gid != 0, "the image's group is root"


def check_dockerfile_install(bundle: Bundle) -> None:
    """The package is installed with the serve extra from the repository's own files, which
    the build context (.dockerignore) lets through."""
    steps = [step for stage in bundle.stages() for step in stage.instructions]
    runs = [stage.expanded(step.value) for stage in bundle.stages() for step in stage.values("RUN")]
    installs = [
        run for run in runs if re.search(r"pip install\b[^&;|]*['\"]?\.\[([\w,]+,)?serve\b", run)
    ]
    assert installs, "no RUN installs '.[serve]' (the package from the repo, with its extra)"
    copied = []
    for step in steps:
        if step.keyword == "COPY" and not step.value.startswith("--from"):
            *sources, _ = step.json_or_words()
            copied += [source.rstrip("/") for source in sources if not source.startswith("--")]
    for required in ("pyproject.toml", "choreo_ingest"):
        assert required in copied, f"the Dockerfile does not COPY {required}"
    for source in copied:
        files = [ROOT / source] if (ROOT / source).is_file() else (ROOT / source).rglob("*.py")
        for path in files:
            relative = path.relative_to(ROOT).as_posix()
            excluded = dockerignore_excludes(bundle.dockerignore, relative)
            assert not excluded, f".dockerignore leaves out {relative}, which the build COPYs"
    for outside in ("tests/test_deploy.py", ".git/HEAD", "choreo-ingest.db"):
        excluded = dockerignore_excludes(bundle.dockerignore, outside)
        assert excluded, f".dockerignore lets {outside} into the build context"


def check_dockerfile_command(bundle: Bundle) -> None:
    """ENTRYPOINT choreo-ingest, CMD serve on 0.0.0.0 at the EXPOSEd port, which is the
    Deployment's container port."""
    stage = bundle.final_stage()
    (entrypoint,) = [step.json_or_words() for step in stage.values("ENTRYPOINT")]
    assert entrypoint == ["choreo-ingest"], f"ENTRYPOINT {entrypoint}"
    assert stage.values("CMD")[-1].value.startswith("["), "CMD in the exec (JSON) form"
    command = stage.values("CMD")[-1].json_or_words()
    assert command[0] == "serve", f"CMD does not run serve: {command}"
    listen = option(command, "--listen")
    assert listen == "0.0.0.0:8080", f"CMD listens on {listen}, not 0.0.0.0:8080"
    exposed = {
        int(word.split("/")[0]) for step in stage.values("EXPOSE") for word in step.value.split()
    }
    _, port = container_port(bundle.one("Deployment"))
    assert exposed == {listen_parts(listen)[1]} == {port}, (
        f"EXPOSE {exposed}, CMD --listen {listen} and the container port {port} differ"
    )


def check_dockerfile_read_only(bundle: Bundle) -> None:
    """Nothing but the state volume and /tmp need be writable: no bytecode writes, the state
    directory (state.path's, in the ConfigMap) is a VOLUME, relative paths land there."""
    stage = bundle.final_stage()
    assert stage.env().get("PYTHONDONTWRITEBYTECODE") == "1", "PYTHONDONTWRITEBYTECODE=1 unset"
    volumes = {word for step in stage.values("VOLUME") for word in step.json_or_words()}
    state_path = bundle.config().state_path
    assert state_path is not None, "the ConfigMap's config sets no state.path"
    assert str(state_path.parent) in volumes, f"{state_path.parent} is not a VOLUME: {volumes}"
    (*_, workdir) = [step.value for step in stage.values("WORKDIR")] or ["/"]
    assert workdir in volumes | {TMP}, f"WORKDIR {workdir} is on the read-only root"


def check_manifests(bundle: Bundle) -> None:
    """Every document is a Kubernetes object, all in the one Namespace the directory defines."""
    for name, document in bundle.documents():
        assert {"apiVersion", "kind", "metadata"} <= document.keys(), f"{name}: not an object"
        assert document["metadata"].get("name"), f"{name}: {document['kind']} has no name"
    namespace = bundle.one("Namespace")["metadata"]["name"]
    for name, document in bundle.documents():
        if document["kind"] != "Namespace":
            found = document["metadata"].get("namespace")
            assert found == namespace, f"{name}: namespace {found}, not {namespace}"


def check_kustomization(bundle: Bundle) -> None:
    """`kubectl apply -k` applies every manifest but the CronJob (never beside the Deployment)
    and the Secret (its values are empty: it is made from files), and nothing else."""
    assert bundle.kustomization.get("kind") == "Kustomization"
    resources = bundle.kustomization.get("resources", [])
    assert len(resources) == len(set(resources)), f"a resource listed twice: {resources}"
    kinds = {name: {d["kind"] for d in documents} for name, documents in bundle.manifests.items()}
    for name in resources:
        assert name in kinds, f"kustomization.yaml lists {name}, not a manifest here"
        assert not kinds[name] & LEFT_OUT_OF_APPLY, f"kustomization.yaml applies {name}"
    wanted = {name for name, found in kinds.items() if not found & LEFT_OUT_OF_APPLY}
    missing = sorted(wanted - set(resources))
    assert not missing, f"kustomization.yaml leaves out {', '.join(missing)}"


def check_service(bundle: Bundle) -> None:
    """The Service selects the Deployment's pods (not the CronJob's) and targets the
    container's port by name."""
    deployment, service = bundle.one("Deployment"), bundle.one("Service")
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    selector = service["spec"]["selector"]
    assert selects(selector, pod_labels(deployment)), "the Service does not select the pods"
    assert not selects(selector, pod_labels(bundle.one("CronJob"))), (
        "the Service selects the CronJob's pods too"
    )
    name, number = container_port(deployment)
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == name, f"targetPort {port['targetPort']}, not the port {name!r}"
    assert resolve_port(deployment, port["targetPort"]) == number


def check_probes(bundle: Bundle) -> None:
    """Readiness on /readyz, liveness (and startup) on /healthz, at the container port."""
    deployment = bundle.one("Deployment")
    paths = {"readinessProbe": "/readyz", "livenessProbe": "/healthz", "startupProbe": "/healthz"}
    _, number = container_port(deployment)
    for probe_name, path in paths.items():
        probe = container(deployment).get(probe_name)
        if probe is None and probe_name == "startupProbe":
            continue
        assert probe, f"the Deployment has no {probe_name}"
        get = probe["httpGet"]
        assert get["path"] == path, f"{probe_name} asks {get['path']}, not {path}"
        assert resolve_port(deployment, get["port"]) == number, f"{probe_name}: wrong port"


def check_single_writer(bundle: Bundle) -> None:
    """One pod at a time on the state volume, with time to finish the page in flight."""
    deployment = bundle.one("Deployment")
    assert deployment["spec"]["replicas"] == 1, "replicas must be 1 (one writer, one volume)"
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}, "strategy must be Recreate"
    burst = bundle.config().incremental.burst_length
    grace = pod_spec(deployment).get("terminationGracePeriodSeconds", 30)
    assert grace >= max(30, 2 * burst), f"terminationGracePeriodSeconds {grace} < 2 x burst"
    claims = [
        volume["persistentVolumeClaim"]["claimName"]
        for volume in pod_spec(deployment)["volumes"]
        if "persistentVolumeClaim" in volume
    ]
    pvc = bundle.one("PersistentVolumeClaim")
    assert claims == [pvc["metadata"]["name"]], f"the Deployment mounts {claims}"
    modes = set(pvc["spec"]["accessModes"])
    assert modes <= {"ReadWriteOnce", "ReadWriteOncePod"}, f"access modes {modes}"


def check_cronjob(bundle: Bundle) -> None:
    """`run` every minute, never two at once, with the Deployment's image and volumes."""
    cronjob, deployment = bundle.one("CronJob"), bundle.one("Deployment")
    spec = cronjob["spec"]
    assert spec["concurrencyPolicy"] == "Forbid", "concurrencyPolicy must be Forbid"
    assert spec["schedule"].split() == ["*"] * 5, f"schedule {spec['schedule']!r}"
    assert container(cronjob).get("args", [None])[0] == "run", "the CronJob does not `run`"
    assert container(cronjob)["image"] == container(deployment)["image"], "different images"
    deadline = spec["jobTemplate"]["spec"].get("activeDeadlineSeconds")
    incremental = bundle.config("CronJob").incremental
    if deadline is not None:
        assert deadline >= 2 * (incremental.burst_length + incremental.request_timeout)

    def sources(workload: Document) -> list[str]:
        return sorted(
            json.dumps({k: v for k, v in volume.items() if k != "secret"}, sort_keys=True)
            for volume in pod_spec(workload)["volumes"]
        )

    assert sources(cronjob) == sources(deployment), "the CronJob's volumes differ"


def check_security(bundle: Bundle) -> None:
    """Both workloads run as the image's user, unprivileged, on a read-only root with /tmp
    an emptyDir, and have resources."""
    uid, gid = dockerfile_user(bundle)
    for kind in WORKLOADS:
        workload = bundle.one(kind)
        security = effective_security(workload)
        assert security.get("runAsNonRoot") is True, f"{kind}: runAsNonRoot"
        assert security.get("runAsUser") == uid, f"{kind}: runAsUser is not the USER {uid}"
        if gid is not None and "runAsGroup" in security:
            assert security["runAsGroup"] == gid, f"{kind}: runAsGroup is not {gid}"
        assert security.get("readOnlyRootFilesystem") is True, f"{kind}: readOnlyRootFilesystem"
        assert security.get("allowPrivilegeEscalation") is False, f"{kind}: privilege escalation"
        assert security.get("capabilities", {}).get("drop") == ["ALL"], f"{kind}: capabilities"
        assert security.get("seccompProfile") == {"type": "RuntimeDefault"}, f"{kind}: seccomp"
        assert isinstance(security["fsGroup"], int), f"{kind}: no fsGroup for the volume"
        mount, volume = mount_for(workload, PurePosixPath(TMP))
        assert mount["mountPath"] == TMP, f"{kind}: no mount at {TMP}"
        assert "emptyDir" in volume, f"{kind}: {TMP} is not an emptyDir"
        resources = container(workload).get("resources", {})
        assert resources.get("requests"), f"{kind}: no resource requests"
        assert resources.get("limits", {}).get("memory"), f"{kind}: no memory limit"


def check_mounts(bundle: Bundle) -> None:
    """The config file comes from the ConfigMap's key, and the state (and anything else the
    config writes) lives on the writable PVC mount."""
    configmap, pvc = bundle.one("ConfigMap"), bundle.one("PersistentVolumeClaim")
    for kind in WORKLOADS:
        workload = bundle.one(kind)
        path = config_file(bundle, workload)
        mount, volume = mount_for(workload, path)
        assert volume.get("configMap", {}).get("name") == configmap["metadata"]["name"], (
            f"{kind}: {path} is not on the ConfigMap's volume"
        )
        key = path.relative_to(mount["mountPath"]).as_posix()
        assert key in configmap["data"], f"{kind}: the ConfigMap has no key {key}"
        config = bundle.config(kind)
        args = container(workload).get("args", [])
        state = option(args, "--db") or config.state_path
        assert state is not None, f"{kind}: no state.path (it would be relative to /)"
        writes = [PurePosixPath(str(state))]
        writes += [
            PurePosixPath(str(p)) for p in (config.metrics_textfile, config.catalog_directory) if p
        ]
        for target in writes:
            assert target.is_absolute(), f"{kind}: {target} is relative"
            mount, volume = mount_for(workload, target)
            claim = volume.get("persistentVolumeClaim", {}).get("claimName")
            assert claim == pvc["metadata"]["name"], f"{kind}: {target} is not on the PVC"
            assert not mount.get("readOnly"), f"{kind}: the state mount is read-only"


def check_secret_files(bundle: Bundle) -> None:
    """Every secret file the config names lies under the Secret's mount and is one of the
    Secret's keys (projected into that workload's volume)."""
    secret = bundle.one("Secret")
    for kind in WORKLOADS:
        workload = bundle.one(kind)
        files = secret_files(bundle.config(kind), kind)
        assert kind != "Deployment" or "serve.auth.tokenFile" in files, "serve has no token"
        for key, value in files.items():
            assert not isinstance(value, DeferredSecret), f"{key}: {value}"
            path = PurePosixPath(str(value))
            mount, volume = mount_for(workload, path)
            assert volume.get("secret", {}).get("secretName") == secret["metadata"]["name"], (
                f"{kind}: {key} ({path}) is not under the Secret's mount"
            )
            assert mount.get("readOnly") is True, f"{kind}: the Secret is mounted writable"
            name = path.relative_to(mount["mountPath"]).as_posix()
            items = volume["secret"].get("items")
            projected = {item["path"]: item["key"] for item in items} if items else None
            if projected is not None:
                assert name in projected, f"{kind}: the Secret volume does not project {name}"
                name = projected[name]
            assert name in secret_keys(secret), f"{key}: the Secret has no key {name!r}"
            mode = volume["secret"].get("defaultMode", 0o644)
            assert mode & 0o007 == 0, f"{kind}: the Secret's files are readable by others"


def check_secret_placeholders(bundle: Bundle) -> None:
    """The example Secret holds empty values, never one: a placeholder anyone can read would
    be a serve token that works (serve refuses an empty one)."""
    secret = bundle.one("Secret")
    values = dict(secret.get("stringData") or {})
    for key, encoded in (secret.get("data") or {}).items():
        values[key] = base64.b64decode(encoded).decode()
    assert values, "the example Secret has no keys"
    for key, value in values.items():
        assert value == "", f"Secret key {key} holds a value: the example leaves it empty"


def check_config(bundle: Bundle) -> None:
    """The ConfigMap's config loads cleanly, talks OAuth to OpenChoreo, and serve listens on
    all interfaces at the container port (so the Service reaches it) with a token."""
    config = bundle.config()
    assert config.warnings == (), config.warnings
    assert config.openchoreo.base_url, "no openchoreo.baseUrl"
    assert config.openchoreo.auth.oauth is not None, "not OAuth2 client credentials"
    assert config.openchoreo.auth.oauth.client_secret_file is not None, "no clientSecretFile"
    host, port = listen_parts(config.serve.listen)
    assert host in ALL_INTERFACES, f"serve.listen {config.serve.listen}: not all interfaces"
    assert not ipaddress.ip_address(host).is_loopback
    deployment = bundle.one("Deployment")
    assert port == container_port(deployment)[1], f"serve.listen port {port} != container port"
    listen = option(container(deployment).get("args", []), "--listen")
    assert listen is None or listen_parts(listen)[1] == port, f"args --listen {listen}"


def check_networkpolicy(bundle: Bundle) -> None:
    """The policy covers the serving pods, lets in only the container port, and only from
    the event forwarder's pods and from named namespaces, never from everywhere."""
    deployment, policy = bundle.one("Deployment"), bundle.one("NetworkPolicy")
    spec = policy["spec"]
    assert selects(spec["podSelector"]["matchLabels"], pod_labels(deployment)), (
        "the NetworkPolicy does not select the Deployment's pods"
    )
    assert "Ingress" in spec.get("policyTypes", ["Ingress"])
    rules = spec.get("ingress", [])
    assert rules, "no ingress rule: nothing, not even the forwarder, gets in"
    _, number = container_port(deployment)
    forwarder = False
    for rule in rules:
        assert rule.get("from"), "an ingress rule without `from` admits every source"
        assert rule.get("ports"), "an ingress rule without `ports` admits every port"
        for port in rule["ports"]:
            assert resolve_port(deployment, port["port"]) == number, f"port {port['port']}"
            assert port.get("protocol", "TCP") == "TCP"
        for peer in rule["from"]:
            assert "ipBlock" not in peer, "an ipBlock peer"
            assert peer.get("namespaceSelector") != {}, "a peer matching every namespace"
            labels = peer.get("podSelector", {}).get("matchLabels", {})
            if "namespaceSelector" in peer and labels.get(FORWARDER_LABEL[0]) == FORWARDER_LABEL[1]:
                forwarder = True
    assert forwarder, "no rule admits OpenChoreo's event forwarder (by namespace and pod label)"


def check_helm_values(bundle: Bundle) -> None:
    """The forwarder's endpoints keep the chart's default and add the Service, at its port,
    on the forwarder's default path (plus the shared secret's segment when one is set)."""
    endpoints = bundle.helm_values["eventForwarder"]["config"]["webhooks"]["endpoints"]
    for endpoint in endpoints:
        assert set(endpoint) <= ENDPOINT_KEYS, f"the chart's schema refuses {set(endpoint)}"
    urls = [endpoint["url"] for endpoint in endpoints]
    assert CHART_DEFAULT_ENDPOINT in urls, "the chart's default (Backstage) endpoint is dropped"
    service = bundle.one("Service")
    name, namespace = service["metadata"]["name"], service["metadata"]["namespace"]
    hosts = {
        f"{name}.{namespace}",
        f"{name}.{namespace}.svc",
        f"{name}.{namespace}.svc.cluster.local",
    }
    ours = [urlsplit(url) for url in urls if urlsplit(url).hostname in hosts]
    assert len(ours) == 1, f"no endpoint (or several) at the Service {name}.{namespace}: {urls}"
    (url,) = ours
    (service_port,) = service["spec"]["ports"]
    assert url.scheme == "http", f"{url.geturl()}: the Service speaks http"
    assert url.port == service_port["port"], f"{url.geturl()}: not the Service's port"
    if bundle.config().serve.events_secret_file is None:
        assert url.path == FORWARDER_PATH, f"{url.path} is not {FORWARDER_PATH}"
    else:
        parent, _, secret = url.path.rpartition("/")
        assert parent == FORWARDER_PATH, f"{url.path}: not {FORWARDER_PATH}/<secret>"
        assert secret, f"{url.path}: no secret segment"


CHECKS = [
    check_dockerfile_base,
    check_dockerfile_user,
    check_dockerfile_install,
    check_dockerfile_command,
    check_dockerfile_read_only,
    check_manifests,
    check_kustomization,
    check_service,
    check_probes,
    check_single_writer,
    check_cronjob,
    check_security,
    check_mounts,
    check_secret_files,
    check_secret_placeholders,
    check_config,
    check_networkpolicy,
    check_helm_values,
]


@pytest.fixture
def bundle(tmp_path: Path) -> Bundle:
    return load_bundle(tmp_path)


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
def test_shipped_files(check: Callable[[Bundle], None], bundle: Bundle) -> None:
    check(bundle)


# --- each check catches what it is there for --------------------------------------------


def deployment_container(bundle: Bundle) -> Document:
    return container(bundle.one("Deployment"))


def replace_in_dockerfile(old: str, new: str, *, regex: bool = False) -> Callable[[Bundle], None]:
    def mutate(bundle: Bundle) -> None:
        pattern = old if regex else re.escape(old)
        replacement = new if regex else new.replace("\\", "\\\\")
        bundle.dockerfile, count = re.subn(pattern, replacement, bundle.dockerfile)
        assert count, f"the Dockerfile has no {old!r} to break"

    return mutate


def set_serve(key: str, value: object) -> Callable[[Bundle], None]:
    def mutate(bundle: Bundle) -> None:
        bundle.set_config(lambda document: document["serve"].__setitem__(key, value))

    return mutate


def set_helm_url(url: str) -> Callable[[Bundle], None]:
    def mutate(bundle: Bundle) -> None:
        endpoints = bundle.helm_values["eventForwarder"]["config"]["webhooks"]["endpoints"]
        endpoints[-1]["url"] = url

    return mutate


def cron_secret_items(bundle: Bundle) -> None:
    (volume,) = [v for v in pod_spec(bundle.one("CronJob"))["volumes"] if "secret" in v]
    volume["secret"]["items"] = [{"key": "serve-token", "path": "serve-token"}]


def drop_tmp(bundle: Bundle) -> None:
    mounts = deployment_container(bundle)["volumeMounts"]
    mounts[:] = [mount for mount in mounts if mount["mountPath"] != TMP]


def move_secret_mount(bundle: Bundle) -> None:
    for mount in deployment_container(bundle)["volumeMounts"]:
        if mount["name"] == "secrets":
            mount["mountPath"] = "/etc/secrets"


MUTATIONS: dict[str, tuple[Callable[[Bundle], None], Callable[[Bundle], None], str]] = {
    "base tag without patch version": (
        replace_in_dockerfile(r"python:(3\.\d+)\.\d+-", r"python:\1-", regex=True),
        check_dockerfile_base,
        "patch tag",
    ),
    "malformed digest": (
        replace_in_dockerfile(r"@sha256:[0-9a-f]{4}", "@sha256:zzzz", regex=True),
        check_dockerfile_base,
        "malformed digest",
    ),
    "USER root": (
        replace_in_dockerfile(r"USER \S+", "USER root", regex=True),
        check_dockerfile_user,
        "numeric",
    ),
    "install without the extra": (
        replace_in_dockerfile('".[${EXTRAS}]"', "."),
        check_dockerfile_install,
        r"installs '\.\[serve\]'",
    ),
    "the extras' default without serve": (
        replace_in_dockerfile("ARG EXTRAS=serve", "ARG EXTRAS=postgres"),
        check_dockerfile_install,
        r"installs '\.\[serve\]'",
    ),
    "dockerignore drops the package": (
        lambda b: b.dockerignore.remove("!choreo_ingest/"),
        check_dockerfile_install,
        "leaves out choreo_ingest",
    ),
    "EXPOSE another port": (
        replace_in_dockerfile(r"EXPOSE \d+", "EXPOSE 1", regex=True),
        check_dockerfile_command,
        "EXPOSE",
    ),
    "CMD on loopback": (
        replace_in_dockerfile(r'"--listen", "0\.0\.0\.0:', '"--listen", "127.0.0.1:', regex=True),
        check_dockerfile_command,
        "not 0.0.0.0:8080",
    ),
    "bytecode written": (
        replace_in_dockerfile("PYTHONDONTWRITEBYTECODE=1", "PYTHONDONTWRITEBYTECODE=0"),
        check_dockerfile_read_only,
        "PYTHONDONTWRITEBYTECODE",
    ),
    "manifest in another namespace": (
        lambda b: b.one("Service")["metadata"].__setitem__("namespace", "default"),
        check_manifests,
        "namespace default",
    ),
    "Service targets another port": (
        lambda b: b.one("Service")["spec"]["ports"][0].__setitem__("targetPort", "metrics"),
        check_service,
        "targetPort metrics",
    ),
    "Service selects the CronJob too": (
        lambda b: b.one("Service")["spec"].__setitem__(
            "selector", {"app.kubernetes.io/name": "choreo-ingest"}
        ),
        check_service,
        "CronJob",
    ),
    "readiness on /healthz": (
        lambda b: deployment_container(b)["readinessProbe"]["httpGet"].__setitem__(
            "path", "/healthz"
        ),
        check_probes,
        "readinessProbe asks /healthz",
    ),
    "liveness at another port": (
        lambda b: deployment_container(b)["livenessProbe"]["httpGet"].__setitem__("port", 9090),
        check_probes,
        "livenessProbe: wrong port",
    ),
    "two replicas": (
        lambda b: b.one("Deployment")["spec"].__setitem__("replicas", 2),
        check_single_writer,
        "replicas",
    ),
    "rolling update": (
        lambda b: b.one("Deployment")["spec"].__setitem__("strategy", {"type": "RollingUpdate"}),
        check_single_writer,
        "Recreate",
    ),
    "concurrent CronJobs": (
        lambda b: b.one("CronJob")["spec"].__setitem__("concurrencyPolicy", "Allow"),
        check_cronjob,
        "Forbid",
    ),
    "another runAsUser": (
        lambda b: pod_spec(b.one("Deployment"))["securityContext"].__setitem__("runAsUser", 1000),
        check_security,
        "runAsUser",
    ),
    "writable root": (
        lambda b: deployment_container(b)["securityContext"].__setitem__(
            "readOnlyRootFilesystem", False
        ),
        check_security,
        "readOnlyRootFilesystem",
    ),
    "no /tmp emptyDir": (drop_tmp, check_security, "nothing is mounted at or above /tmp"),
    "state off the volume": (
        lambda b: b.set_config(lambda d: d["state"].__setitem__("path", "/data/state.db")),
        check_mounts,
        "nothing is mounted",
    ),
    "client secret not a Secret key": (
        lambda b: b.set_config(
            lambda d: d["openchoreo"]["auth"]["oauth"].__setitem__(
                "clientSecretFile", "/run/secrets/choreo-ingest/client-secret"
            )
        ),
        check_secret_files,
        "no key 'client-secret'",
    ),
    "Secret mounted elsewhere": (move_secret_mount, check_secret_files, "nothing is mounted"),
    "CronJob without the client secret": (
        cron_secret_items,
        check_secret_files,
        "does not project",
    ),
    "a real-looking secret": (
        lambda b: b.one("Secret")["stringData"].__setitem__("serve-token", "hunter2"),
        check_secret_placeholders,
        "serve-token",
    ),
    "listen on another port": (set_serve("listen", "0.0.0.0:9090"), check_config, "container port"),
    "listen on loopback": (set_serve("listen", "127.0.0.1:8080"), check_config, "all interfaces"),
    "policy on other pods": (
        lambda b: b.one("NetworkPolicy")["spec"]["podSelector"]["matchLabels"].__setitem__(
            "app.kubernetes.io/component", "cron"
        ),
        check_networkpolicy,
        "does not select",
    ),
    "policy opens another port": (
        lambda b: b.one("NetworkPolicy")["spec"]["ingress"][0]["ports"][0].__setitem__(
            "port", 9090
        ),
        check_networkpolicy,
        "port 9090",
    ),
    "policy without the forwarder": (
        lambda b: b.one("NetworkPolicy")["spec"]["ingress"].pop(0),
        check_networkpolicy,
        "event forwarder",
    ),
    "webhook at Backstage's port": (
        set_helm_url("http://choreo-ingest.choreo-ingest.svc.cluster.local:7007" + FORWARDER_PATH),
        check_helm_values,
        "port",
    ),
    "webhook on another path": (
        set_helm_url("http://choreo-ingest.choreo-ingest.svc.cluster.local:8080/events/openchoreo"),
        check_helm_values,
        "is not /api/events/http/openchoreo",
    ),
    "the CronJob applied beside the Deployment": (
        lambda bundle: bundle.kustomization["resources"].append("cronjob.yaml"),
        check_kustomization,
        "applies cronjob.yaml",
    ),
    "the volume left out of kubectl apply -k": (
        lambda bundle: bundle.kustomization["resources"].remove("pvc.yaml"),
        check_kustomization,
        "leaves out pvc.yaml",
    ),
    "webhook at another Service": (
        set_helm_url("http://ingest.choreo-ingest.svc.cluster.local:8080" + FORWARDER_PATH),
        check_helm_values,
        "no endpoint",
    ),
}


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_a_broken_file_is_caught(name: str, bundle: Bundle) -> None:
    mutate, check, message = MUTATIONS[name]
    broken = copy.deepcopy(bundle)
    mutate(broken)
    with pytest.raises(AssertionError, match=message):
        check(broken)
